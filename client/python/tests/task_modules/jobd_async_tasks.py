"""A task module with an async def task, which jobd refuses at start."""

import asyncio

import jobd


@jobd.task
async def nap(seconds: float):
    await asyncio.sleep(seconds)
