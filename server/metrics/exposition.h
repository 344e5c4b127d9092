// The Prometheus text exposition (format 0.0.4) of one jobd: rendered at
// scrape time from what GetStats already knows (executors, process pool,
// journal) and the scheduler's per-task end counters, so nothing on the
// job path counts twice. Label values are bounded: executors, states and
// reasons are enums, tasks are capped (TaskCounters), pool slots are the
// configured ones, retire reasons a fixed set.
//
// Thread-safety: a pure function of its arguments.
#ifndef JOBD_SERVER_METRICS_EXPOSITION_H_
#define JOBD_SERVER_METRICS_EXPOSITION_H_

#include <string>

#include "jobd/v1/jobd.pb.h"
#include "server/scheduler/task_counters.h"

namespace jobd {

// The scrape's body (Content-Type: text/plain; version=0.0.4).
std::string RenderMetrics(const v1::GetStatsResponse& stats,
                          const TaskCounters::Snapshot& tasks);

}  // namespace jobd

#endif  // JOBD_SERVER_METRICS_EXPOSITION_H_
