// jobd_bench --fair: fair share between callers, and what it costs the
// hot path. Two callers with tokens on one daemon, one submitting 100
// times more sleep jobs than the other, the small one joining once the
// flood is queued: its share of the starts while it has jobs queued
// (from the STARTED events' sequence numbers), at 1:1 and with
// --caller-weight alice=3, and how long its jobs took against the
// flood's. With --baseline-jobd, the same 1:1 contest on that binary (a
// build without fair share: one FIFO per priority), and the no-op stream
// without auth (one caller) alternately on the baseline and on this
// build, fresh daemons, medians.
//
// Thread-safety: runs on the caller's thread; the flood's stream is read
// on a thread of its own.
#ifndef JOBD_BENCH_FAIR_RUN_H_
#define JOBD_BENCH_FAIR_RUN_H_

#include <functional>
#include <string>

#include "jobd/v1/jobd.grpc.pb.h"

namespace jobd::bench {

struct FairRunOptions {
  int jobs = 10000;  // The flood's; the other caller submits jobs / 100.
  int job_ms = 1;    // Each job sleeps this long (thread pool).
  int workers = 2;
  int stream_jobs = 300000;  // No-op jobs per hot-path run.
  int batch = 256;
  int window = 65536;
  int repeat = 5;             // Hot-path pairs.
  std::string baseline_jobd;  // Empty: no baseline runs.
};

// `stream(stub, n)`: n no-op jobs through one Submit stream; jobs/s.
int RunFairBench(
    const FairRunOptions& options,
    const std::function<double(v1::JobService::Stub&, int)>& stream);

}  // namespace jobd::bench

#endif  // JOBD_BENCH_FAIR_RUN_H_
