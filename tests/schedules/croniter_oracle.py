#!/usr/bin/python3
"""The oracle of cron_test: next fire times by croniter (Debian's
python3-croniter), for the rows of a table the test writes.

Reads lines "EXPR<TAB>ZONE<TAB>START_UNIX<TAB>N" from the file named by
argv[1]; prints, per line, N fire times (Unix seconds, space-separated):
each the next one after the previous, asked of a fresh croniter (as jobd's
runner asks from its last slot). EXPR is in jobd's order (6 fields: the
second first); croniter wants the second last, so it is moved, and
croniter 1.3.5 knows no `?`, which is `*` in jobd's day fields.
"""

import datetime
import sys

import pytz
from croniter import croniter


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            expr, zone, start, n = line.rstrip("\n").split("\t")
            fields = ["*" if f == "?" else f for f in expr.split()]
            if len(fields) == 6:
                fields = fields[1:] + fields[:1]
            tz = pytz.timezone(zone)
            t = int(start)
            out = []
            for _ in range(int(n)):
                start_dt = datetime.datetime.fromtimestamp(t, tz)
                t = int(croniter(" ".join(fields), start_dt).get_next(float))
                out.append(str(t))
            print(" ".join(out))


if __name__ == "__main__":
    main()
