// The Prometheus text exposition (format 0.0.4) of one jobd: rendered at
// scrape time from what GetStats already knows (executors, process pool,
// journal), the scheduler's per-task counters, the journal's commit
// histograms and the frontend's per-RPC counters (server/telemetry), so
// nothing on the job path counts twice. Label values are bounded:
// executors, states, reasons and status codes are enums, tasks are capped
// (TaskCounters), methods are the service's (RpcStats), pool slots are the
// configured ones, retire reasons a fixed set.
//
// Thread-safety: a pure function of its arguments.
#ifndef JOBD_SERVER_METRICS_EXPOSITION_H_
#define JOBD_SERVER_METRICS_EXPOSITION_H_

#include <optional>
#include <string>
#include <vector>

#include "jobd/v1/jobd.pb.h"
#include "server/journal/journal.h"
#include "server/scheduler/task_counters.h"
#include "server/telemetry/rpc_stats.h"

namespace jobd {

// What one scrape shows, gathered by the caller.
struct MetricsSources {
  v1::GetStatsResponse stats;
  TaskCounters::Snapshot tasks;
  std::optional<Journal::Commits> journal;  // None without a journal.
  std::vector<RpcStats::MethodSnapshot> rpcs;
};

// The scrape's body (Content-Type: text/plain; version=0.0.4).
std::string RenderMetrics(const MetricsSources& sources);

}  // namespace jobd

#endif  // JOBD_SERVER_METRICS_EXPOSITION_H_
