// jobd_bench --chain: dependent jobs per second through one Submit stream.
// One jobd runs a chain of no-op jobs, each depending on the previous one
// by its client tag (SubmitItem.depends_on_tags), all sent at once: jobd
// starts each as the one before it ends, with no client round trip. For
// scale, the same chain driven by the client (submit, wait for the end,
// submit the next) on the same daemon. With --durability none and, apart,
// with the journal (batched), best of `repeat` each.
//
// Thread-safety: runs on the caller's thread.
#ifndef JOBD_BENCH_CHAIN_RUN_H_
#define JOBD_BENCH_CHAIN_RUN_H_

namespace jobd::bench {

struct ChainRunOptions {
  int jobs = 20000;  // Length of the chain.
  int batch = 256;   // Items per message.
  int window = 8192;
  int workers = 2;
  int repeat = 3;
};

int RunChainBench(const ChainRunOptions& options);

}  // namespace jobd::bench

#endif  // JOBD_BENCH_CHAIN_RUN_H_
