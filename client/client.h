// jobd::client: the C++ client library of jobd (package jobd.v1).
//
//   auto client = jobd::client::Client::Connect({.address = "unix:/x.sock"});
//   if (!client.ok()) ...;
//   Future f = (*client)->Submit(MakeSpec("sleep", 100));
//   absl::StatusOr<JobOutcome> out = f.Get(absl::Seconds(5));
//
//   MapStream m = (*client)->Map("echo", next_args, {.ordered = true});
//   for (MapResult r; m.Next(&r);) ...;   then m.status()
//
// * Client::Submit: futures (future.h); all futures of one Client share one
//   bidirectional Submit stream (completion order), with batched writes on a
//   writer thread and events dispatched by a reader thread.
// * Client::Map: a fast pipeline on its own Submit stream, pulling inputs
//   lazily and keeping at most `window` jobs in flight.
// * Thin wrappers of the unary RPCs, of WatchJobs and of StreamJobOutput.
// Errors are absl::Status values carrying the gRPC code (UNAVAILABLE when
// jobd is unreachable, INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED when
// it refuses a request). Nothing throws across this API.
//
// Thread-safety: Client is thread-safe: every method may be called from any
// thread concurrently. MapStream and WatchStream are single-consumer: call
// Next() from one thread at a time (Cancel() from any thread).
// Ownership: Connect() returns the sole owner of the Client. Its destructor
// sends the specs already submitted, half-closes the shared stream, waits at
// most ClientOptions::close_timeout for them to be accepted and for the
// stream to end, then cancels it and joins its threads; futures not ended by
// then complete with CANCELLED (their jobs keep running on the daemon).
// MapStream and WatchStream own their streams and may outlive the Client.
#ifndef JOBD_CLIENT_CLIENT_H_
#define JOBD_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "client/json.h"
#include "google/protobuf/struct.pb.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::client {

namespace internal {
struct Core;
class SubmitSession;
class MapStreamImpl;
class WatchStreamImpl;
}  // namespace internal

struct ClientOptions {
  // gRPC target: "unix:/path/jobd.sock" or "host:port". Empty:
  // jobd::v1::DefaultClientAddress() ($JOBD_ADDRESS, else the default socket).
  std::string address;
  // Connect() waits this long for the channel to be ready; later calls and
  // new streams wait as long for a reconnect when the channel is not ready
  // (e.g. jobd restarted), then fail with UNAVAILABLE.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Deadline of each unary RPC (GetJob adds its wait to it).
  absl::Duration rpc_timeout = absl::Seconds(30);
  // The destructor waits at most this long for submitted specs to be
  // accepted and the shared Submit stream to end (see the file comment).
  absl::Duration close_timeout = absl::Seconds(5);
  // Pings jobd this often while calls are open, so that a connection that
  // died without a reset (a host gone, a network cut) is noticed within it
  // plus 10 s by a stream that only reads (a watch, Map's results). Zero:
  // no pings; else at least 1 s (jobd accepts a ping a second at most).
  absl::Duration keepalive = absl::Seconds(20);
  // Window of the shared Submit stream (jobd clamps it to its maximum).
  uint32_t submit_window = 65536;
  // Most specs per SubmitRequest message (jobd's default limit is 4096).
  int max_batch = 1024;
  // Bearer token for a jobd with --auth-token; empty: $JOBD_TOKEN if set.
  std::string token;
  // TLS to a TCP address (jobd --tls-cert): the CA bundle that verifies
  // jobd (empty: the system's roots), a client certificate and key for mTLS
  // (jobd --tls-client-ca), and the name to expect in jobd's certificate
  // when it is not the address's host.
  struct Tls {
    bool enabled = false;
    std::string ca_file, cert_file, key_file, server_name;
  } tls;
};

// --- Map ---------------------------------------------------------------

struct MapOptions {
  // True: results in input order (ORDER_SUBMISSION); false: as jobs end.
  bool ordered = false;
  // Jobs in flight at most (client side, and the stream's window).
  uint32_t window = 8192;
  v1::JobKind kind = v1::JOB_KIND_AUTO;
  v1::Executor executor = v1::EXECUTOR_UNSPECIFIED;  // Let jobd route.
  // Run-time limit of each job (spec.timeout); infinite = none.
  absl::Duration timeout = absl::InfiniteDuration();
  int32_t priority = 0;
  // Process pool: jobs travel to a worker in chunks of up to this many
  // (JobSpec.chunksize; Python's map chunksize). For many tiny jobs.
  uint32_t chunksize = 1;
  // What a job running when jobd stops becomes at its next start
  // (JobSpec.delivery): UNSPECIFIED = at most once (LOST_ON_RESTART).
  v1::Delivery delivery = v1::DELIVERY_UNSPECIFIED;
  // Only REJECTED and terminal events on the stream (Map needs no more);
  // false: every event (ACCEPTED, STARTED, PROGRESS too).
  bool terminal_only = true;
  // Cancel the stream's unfinished jobs if it ends early (MapStream destroyed
  // or cancelled before the end, client gone).
  bool cancel_on_disconnect = true;
  // Deadline of the whole stream; infinite = none. When it passes, Next()
  // returns false and status() is DEADLINE_EXCEEDED.
  absl::Duration deadline = absl::InfiniteDuration();
  // Most specs per SubmitRequest message.
  int max_batch = 1024;
};

// One input's end, as MapStream::Next returns it.
struct MapResult {
  uint64_t index = 0;  // 0-based position of the input.
  // Non-OK: jobd rejected the input (no job ran): the REJECTED event's code
  // and message; outcome.error then holds that error (with its reason) and
  // outcome.state is UNSPECIFIED. OK: `outcome` holds how the job ended.
  absl::Status status;
  JobOutcome outcome;
  bool ok() const { return status.ok() && outcome.ok(); }
};

// What an input source said.
enum class InputStatus {
  kReady,     // *spec was filled: submit it.
  kNotReady,  // No input right now (only when may_block was false).
  kEnd,       // No more inputs.
};

// Fills the next job's spec, which arrives pre-filled from MapOptions (task,
// kind, executor, timeout, priority): typically adds args / kwargs / payload;
// may override anything. When `may_block` is false some jobs are in flight
// and the source should answer kNotReady rather than block for input that is
// not there yet (a source that never blocks can ignore the flag). Called
// lazily from the thread calling MapStream::Next, never concurrently.
using SpecSource =
    std::function<InputStatus(v1::JobSpec* spec, bool may_block)>;

// Simple source: the next input's positional arguments, nullopt at the end.
using ArgsSource =
    std::function<std::optional<std::vector<google::protobuf::Value>>()>;

// The results of one Map: one MapResult per input, in input order if
// MapOptions::ordered, else as jobs end. Movable, single-consumer.
class MapStream {
 public:
  MapStream(MapStream&&) noexcept;
  MapStream& operator=(MapStream&&) noexcept;
  // Cancels the stream if it has not ended (see cancel_on_disconnect).
  ~MapStream();

  // Pulls inputs, submits them and blocks for the next result. False when
  // every input has its result, or the stream failed (see status()).
  bool Next(MapResult* out);
  // OK after a complete run; else why the stream ended early (UNAVAILABLE,
  // DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED, ...): inputs without
  // a result then have no MapResult (their jobs may have run).
  absl::Status status() const;
  // Ends the stream early from any thread; Next() then returns false with
  // status() CANCELLED.
  void Cancel();

  uint64_t submitted() const;  // Inputs pulled and sent so far.
  uint64_t completed() const;  // Results returned so far.
  bool inputs_done() const;    // The source said kEnd.
  // A result is buffered: the next Next() returns it without waiting for
  // the network (e.g. flush output when false, before blocking). Consumer
  // thread only.
  bool ready() const;

 private:
  friend class Client;
  explicit MapStream(std::unique_ptr<internal::MapStreamImpl> impl);
  std::unique_ptr<internal::MapStreamImpl> impl_;
};

// --- Watch -------------------------------------------------------------

struct WatchOptions {
  std::vector<std::string> job_ids;  // Empty: every job, until cancelled.
  uint64_t after_sequence = 0;  // Replay retained events after it; 0: live.
  bool include_progress = false;
};

// The events of a WatchJobs stream. Movable, single-consumer.
class WatchStream {
 public:
  WatchStream(WatchStream&&) noexcept;
  WatchStream& operator=(WatchStream&&) noexcept;
  ~WatchStream();  // Cancels the stream if it has not ended.

  // Blocks for the next event; false at the end (every named job ended, or
  // an error / Cancel(): see status()).
  bool Next(v1::JobEvent* event);
  // OK if the stream ended normally (or was cancelled with Cancel()).
  absl::Status status() const;
  void Cancel();  // From any thread.

  // From the stream's first message (valid once Next() was called): events
  // between after_sequence and oldest_retained_sequence were lost.
  bool events_lost() const;
  uint64_t oldest_retained_sequence() const;

 private:
  friend class Client;
  explicit WatchStream(std::unique_ptr<internal::WatchStreamImpl> impl);
  std::unique_ptr<internal::WatchStreamImpl> impl_;
};

// --- Job output ----------------------------------------------------------

struct OutputOptions {
  uint64_t offset = 0;  // Resume here (a response's next_offset); 0: oldest.
  bool follow = false;  // Then live until the job ends.
};

// --- Client ------------------------------------------------------------

struct ListJobsFilter {
  std::vector<v1::JobState> states;  // Empty: any.
  std::string task;                  // Empty: any.
  size_t limit = 100;                // Jobs at most (pages are fetched).
  bool all_nodes = false;  // Cluster mode: every node's (ListJobsRequest).
};

class Client {
 public:
  // Connects to jobd, waiting for the channel to be ready for at most
  // options.connect_timeout. UNAVAILABLE naming the address if jobd is not
  // there.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // The gRPC target in use.
  const std::string& address() const;
  const ClientOptions& options() const;

  // Queues `spec` on the shared Submit stream (opened on first use, reopened
  // after it broke) and returns at once. Never blocks on the network: specs
  // wait in memory while jobd's window is full. A spec jobd refuses gets a
  // REJECTED event: the future's Get() returns that error.
  Future Submit(v1::JobSpec spec);

  // Map over inputs on a dedicated Submit stream (see MapOptions/MapStream).
  // `task` and the options pre-fill every spec.
  MapStream Map(std::string task, ArgsSource next, MapOptions options = {});
  MapStream MapSpecs(std::string task, SpecSource next,
                     MapOptions options = {});

  // GetJob. With `wait` > 0: until the job ends or `wait` passes (then the
  // job as it is). NOT_FOUND / INVALID_ARGUMENT for an unknown / bad id.
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id,
                                 absl::Duration wait = absl::ZeroDuration());
  // GetJob with `wait`, across a restart of jobd: while jobd does not
  // answer (UNAVAILABLE: stopped or restarting; DEADLINE_EXCEEDED), asks
  // again until `reconnect` has passed without an answer, then fails
  // UNAVAILABLE. A job jobd kept in its journal is found again after the
  // restart: an at-least-once job that was running runs again, an
  // at-most-once one has failed LOST_ON_RESTART. Fails NOT_FOUND if jobd
  // does not know the job (after a silence: an in-memory job lost in a
  // restart, or one forgotten since), and DATA_LOSS if the job it finds was
  // created after `accepted_at` (Future::accepted_at; InfinitePast: not
  // checked): the id names another job, as after a restart without the journal.
  absl::StatusOr<v1::Job> FollowJob(
      const std::string& job_id, absl::Duration wait,
      absl::Duration reconnect = absl::Seconds(30),
      absl::Time accepted_at = absl::InfinitePast());
  // CancelJob. NOT_FOUND if unknown.
  absl::StatusOr<v1::CancelJobResponse> Cancel(const std::string& job_id);
  // One ListJobs page, as is.
  absl::StatusOr<v1::ListJobsResponse> ListJobsPage(
      const v1::ListJobsRequest& request);
  // Up to filter.limit jobs, oldest first, fetching pages as needed.
  absl::StatusOr<std::vector<v1::Job>> ListJobs(
      const ListJobsFilter& filter = {});
  absl::StatusOr<std::vector<v1::TaskInfo>> ListTasks();
  absl::StatusOr<v1::GetStatsResponse> GetStats();
  // Lifts a task's quarantine; returns whether it was quarantined.
  // NOT_FOUND for an unknown task.
  absl::StatusOr<bool> ClearQuarantine(const std::string& task);
  // Asks jobd to shut down gracefully, as SIGTERM does (admin only).
  absl::Status Drain();
  // Sets or clears a concurrency key's limits (admin only); returns the key
  // as it is then. INVALID_ARGUMENT naming the field for a bad request.
  absl::StatusOr<v1::KeyLimit> SetKeyLimit(
      const v1::SetKeyLimitRequest& request);
  // The concurrency keys with limits or jobs.
  absl::StatusOr<std::vector<v1::KeyLimit>> GetKeyLimits();

  // Periodic schedules (README: Schedules). CreateSchedule: the schedule
  // and whether it existed (a retried create with the same spec).
  absl::StatusOr<v1::CreateScheduleResponse> CreateSchedule(
      const std::string& id, const v1::ScheduleSpec& spec, bool paused);
  absl::StatusOr<v1::Schedule> GetSchedule(const std::string& id);
  absl::StatusOr<std::vector<v1::Schedule>> ListSchedules();
  // Pauses (`paused`) or resumes a schedule.
  absl::StatusOr<v1::Schedule> PauseSchedule(const std::string& id,
                                             bool paused);
  // Whether it existed.
  absl::StatusOr<bool> DeleteSchedule(const std::string& id);
  // StreamJobOutput: `on_message` gets each message, in order, until the
  // stream ends (OK; the last message has `ended` when the job ended),
  // `on_message` returns false (OK), or an error (NOT_FOUND for an
  // unknown job). Blocks; the stream has no deadline.
  absl::Status StreamOutput(
      const std::string& job_id, OutputOptions options,
      const std::function<bool(const v1::StreamJobOutputResponse&)>&
          on_message);

  // WatchJobs as a stream of events.
  WatchStream Watch(WatchOptions options);
  // WatchJobs with a callback per event, blocking until the stream ends or
  // the callback returns false (then OK).
  absl::Status Watch(WatchOptions options,
                     const std::function<bool(const v1::JobEvent&)>& on_event);

 private:
  explicit Client(std::shared_ptr<internal::Core> core);

  struct State;
  std::shared_ptr<internal::Core> core_;
  std::unique_ptr<State> state_;
};

}  // namespace jobd::client

#endif  // JOBD_CLIENT_CLIENT_H_
