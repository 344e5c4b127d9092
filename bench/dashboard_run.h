// jobd_bench --dashboard: what the dashboard costs the job path. One jobd
// with --http-listen runs the no-op stream in phases that alternate
// between no viewer and `viewers` clients polling the API as the page
// does (each second: /api/stats, /api/jobs, /api/throughput); prints each
// phase, the medians, and jobd's CPU time per job (from
// /proc/PID/task/*/schedstat) in each.
//
// Thread-safety: runs on the caller's thread; its viewers are its own.
#ifndef JOBD_BENCH_DASHBOARD_RUN_H_
#define JOBD_BENCH_DASHBOARD_RUN_H_

#include <functional>

#include "jobd/v1/jobd.grpc.pb.h"

namespace jobd::bench {

struct DashboardRunOptions {
  int jobs = 300000;  // Per phase.
  int batch = 256;
  int window = 8192;
  int workers = 2;
  int repeat = 9;  // Phases of each kind.
  int viewers = 10;
};

// `stream(stub, n)`: n no-op jobs through one Submit stream; jobs/s.
int RunDashboardBench(
    const DashboardRunOptions& options,
    const std::function<double(v1::JobService::Stub&, int)>& stream);

}  // namespace jobd::bench

#endif  // JOBD_BENCH_DASHBOARD_RUN_H_
