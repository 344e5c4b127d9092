// ServiceLimits: the request limits and per-caller quotas the gRPC service
// enforces (server/frontend/service.h), apart so that the configuration
// can name them without gRPC.
#ifndef JOBD_SERVER_FRONTEND_SERVICE_LIMITS_H_
#define JOBD_SERVER_FRONTEND_SERVICE_LIMITS_H_

#include <cstddef>
#include <cstdint>

#include "server/frontend/spec_validator.h"

namespace jobd {

struct ServiceLimits {
  SpecLimits spec;
  size_t max_jobs_per_request = 4096;  // Items in one SubmitRequest.
  uint32_t default_window = 4096;      // Submit window when the client says 0.
  uint32_t max_window = 65536;
  // A watcher that falls this many events behind is dropped (it can resume).
  size_t max_watch_backlog = 65536;
  // Bytes of events (results included) a stream holds for a client that
  // has not read them: a Submit stream stops taking jobs past it and is
  // ended past twice it; a WatchJobs stream is ended past it (0: no
  // limit). Applies to streams opened after a change.
  uint64_t stream_buffer_bytes = uint64_t{32} << 20;
  // All streams together: once they hold this much, a stream holding more
  // than its share (this over the streams open) is treated as over its own
  // limit (0: no limit).
  uint64_t total_stream_buffer_bytes = uint64_t{128} << 20;
  size_t max_message_bytes = 16 << 20;  // Reported to clients (GetStats).
  // Per caller that is not admin (0: unlimited): unfinished jobs, jobs
  // submitted per second (a token bucket with one second of burst), bytes
  // its jobs hold (specs of its unfinished jobs, specs and results of its
  // retained ones: OwnerQuota::max_bytes), and Submit + WatchJobs streams
  // open at once.
  size_t quota_max_live = 0;
  double quota_submit_rate = 0;
  uint64_t quota_max_bytes = uint64_t{64} << 20;  // OwnerQuota::max_bytes.
  size_t max_streams_per_caller = 256;
  // Submit + WatchJobs streams open at once, all callers (admin too); 0:
  // unlimited.
  size_t max_streams = 4096;
};

}  // namespace jobd

#endif  // JOBD_SERVER_FRONTEND_SERVICE_LIMITS_H_
