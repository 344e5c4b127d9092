// Dashboard: the live web view of one jobd, served on the metrics
// listener (--http-listen): a page (HTML, JS and CSS compiled into the
// binary: assets.h) and the JSON API it polls:
//
//   GET  /api/me                  who the caller is, what it may do
//   GET  /api/stats               GetStats, as JSON (protobuf's mapping)
//   GET  /api/throughput?after=MS the counters sampled each second
//   GET  /api/jobs                running jobs and the latest jobs
//   GET  /api/jobs/ID             one job: spec, state, attempts, result or
//                                 error, and its events still in the log
//   POST /api/jobs/ID/cancel      cancel (admin, or its owner with the
//                                 submit role); needs the header
//                                 X-Jobd-Request, which a cross-site form
//                                 cannot send
//
// Auth follows the daemon's (server/auth, through HttpCaller, as /metrics
// does): without tokens configured the API is open (the listener is
// loopback only, and requests must name a loopback host, which a
// DNS-rebinding page cannot); with tokens, each API request carries
// `Authorization: Bearer TOKEN` (the page keeps it in sessionStorage), or,
// on HTTPS with --tls-client-ca, a client certificate of a --tls-identity;
// the submit or read role views (a caller that is not admin sees only its
// own jobs), as over gRPC.
//
// Cost: what the scheduler is asked does not grow with the viewers. A
// sampler thread takes GetStats once per interval (the chart and
// /api/stats read its latest); job lists are computed at most once per
// interval per caller view and shared; queries are bounded (newest first,
// a scan limit). Every answer closes its connection, so a viewer never
// holds one of the listener's few threads between polls.
//
// Thread-safety: the handlers run on the listener's threads, concurrently;
// Start/Stop from the owner's thread.
// Ownership: refers to the scheduler and the authenticator, which outlive
// it; owns its sampler thread (Stop joins it).
#ifndef JOBD_SERVER_DASHBOARD_DASHBOARD_H_
#define JOBD_SERVER_DASHBOARD_DASHBOARD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/authenticator.h"
#include "server/dashboard/throughput.h"
#include "server/scheduler/scheduler.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace jobd {

struct DashboardOptions {
  std::string version;  // jobd's, shown on the page (GetStats's version).
  absl::Duration interval = absl::Seconds(1);  // Sampling, list caching.
  size_t history = 600;                        // Samples kept (10 minutes).
  size_t recent_jobs = 30;                     // Latest jobs listed.
  size_t running_jobs = 50;                    // Running jobs listed.
  // Jobs a list looks at, at most, newest first (bounds its lock time).
  size_t max_scanned = 20000;
  // A job page larger than this (JSON bytes, about) omits its result's
  // value and payload.
  size_t max_job_bytes = 1 << 20;
};

class Dashboard {
 public:
  Dashboard(Scheduler& scheduler, const Authenticator& auth,
            DashboardOptions options = {});
  ~Dashboard();
  Dashboard(const Dashboard&) = delete;
  Dashboard& operator=(const Dashboard&) = delete;

  // Starts the sampler thread (call once).
  void Start();
  void Stop();
  // Adds the page's and the API's routes to `server` (before it listens).
  void AddRoutes(httplib::Server& server);

 private:
  struct JobLists {
    absl::Time taken = absl::InfinitePast();
    std::string json;
  };

  void Sample();
  // The caller of `req`, allowed `roles`; or the HTTP error already set in
  // `res` (nullopt).
  absl::StatusOr<Caller> Authorize(const httplib::Request& req, uint32_t roles,
                                   std::string_view what) const;
  std::string StatsJson();
  std::string JobListsJson(const Caller& caller);
  absl::StatusOr<std::string> JobJson(uint64_t id, const Caller& caller);
  absl::StatusOr<std::string> CancelJson(uint64_t id, const Caller& caller);

  // Const after construction.
  Scheduler& scheduler_;
  const Authenticator& auth_;
  const DashboardOptions options_;
  ThroughputHistory history_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The latest GetStats, as /api/stats answers it (rendered once per
  // sample, whatever the viewers).
  std::shared_ptr<const std::string> stats_json_ ABSL_GUARDED_BY(mu_);
  // By owner ("" for admins: every job); at most kMaxViews.
  absl::flat_hash_map<std::string, JobLists> lists_ ABSL_GUARDED_BY(mu_);
  static constexpr size_t kMaxViews = 64;

  std::thread sampler_;
};

}  // namespace jobd

#endif  // JOBD_SERVER_DASHBOARD_DASHBOARD_H_
