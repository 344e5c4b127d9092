#include "server/daemon/reload.h"

#include "absl/strings/str_join.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

std::string Text(const std::string& v) { return "'" + v + "'"; }
std::string Text(absl::Duration v) { return absl::FormatDuration(v); }
std::string Text(bool v) { return v ? "true" : "false"; }
std::vector<std::string> TaskRetries(const std::map<std::string, uint32_t>& m) {
  std::vector<std::string> out;
  for (const auto& [task, n] : m) out.push_back(fmt::format("{}={}", task, n));
  return out;
}
std::string Text(const std::map<std::string, uint32_t>& m) {
  return "[" + absl::StrJoin(TaskRetries(m), ",") + "]";
}
std::string Text(const std::vector<std::string>& v) {
  return "[" + absl::StrJoin(v, ",") + "]";
}
template <typename T>
std::string Text(const T& v) {
  return fmt::format("{}", v);
}

// Collects "--flag: old -> new" lines of the settings that differ.
class Diff {
 public:
  template <typename T>
  bool Check(const char* flag, const T& old_value, const T& new_value,
             std::vector<std::string>& into) {
    if (old_value == new_value) return false;
    into.push_back(
        fmt::format("--{}: {} -> {}", flag, Text(old_value), Text(new_value)));
    return true;
  }
};

}  // namespace

ReloadResult ApplyConfig(DaemonConfig& current, const DaemonConfig& fresh,
                         Scheduler& scheduler, JobServiceImpl& service,
                         ExecPolicy& exec, HttpPolicy& http,
                         Authenticator& auth) {
  ReloadResult r;
  Diff d;
  auto& live = r.applied;
  auto& later = r.needs_restart;

  if (d.Check("log-level", current.log_level, fresh.log_level, live)) {
    spdlog::set_level(spdlog::level::from_str(fresh.log_level));
  }
  if (d.Check("thread-workers", current.thread_workers, fresh.thread_workers,
              live)) {
    scheduler.ResizeExecutor(v1::EXECUTOR_THREAD, fresh.thread_workers);
  }
  if (current.reactor.threads > 0 &&
      d.Check("reactor-max-jobs", current.reactor.max_jobs,
              fresh.reactor.max_jobs, live)) {
    scheduler.ResizeExecutor(v1::EXECUTOR_REACTOR, fresh.reactor.max_jobs);
  }
  const SchedulerOptions& so = current.scheduler;
  const SchedulerOptions& sn = fresh.scheduler;
  bool limits = d.Check("max-queued", so.max_queued, sn.max_queued, live);
  limits |= d.Check("retention-ttl", so.retention_ttl, sn.retention_ttl, live);
  limits |= d.Check("max-retained", so.max_retained, sn.max_retained, live);
  limits |=
      d.Check("max-live-bytes", so.max_live_bytes, sn.max_live_bytes, live);
  limits |= d.Check("max-retained-bytes", so.max_retained_bytes,
                    sn.max_retained_bytes, live);
  limits |= d.Check("max-retained-result-bytes", so.max_retained_result_bytes,
                    sn.max_retained_result_bytes, live);
  limits |= d.Check("output-bytes-per-job", so.output_bytes_per_job,
                    sn.output_bytes_per_job, live);
  limits |= d.Check("max-output-bytes", so.max_output_bytes,
                    sn.max_output_bytes, live);
  limits |=
      d.Check("caller-weight", so.caller_weights, sn.caller_weights, live);
  if (limits) scheduler.SetLimits(sn);
  const ServiceLimits& lo = current.service;
  ServiceLimits ln = fresh.service;
  bool service_limits = d.Check("max-payload-bytes", lo.spec.max_payload_bytes,
                                ln.spec.max_payload_bytes, live);
  // Callbacks: the allowlist is live (for jobs submitted from now on) while
  // the signing key stays; a new key, or a first one, needs a restart (the
  // dispatcher signs with the key it started with), and so does the rest.
  const callbacks::CallbackOptions& cbo = current.callbacks;
  const callbacks::CallbackOptions& cbn = fresh.callbacks;
  if (cbo.secret != cbn.secret) {
    later.push_back("--callback-secret-file: the key changed");
  }
  if (cbo.secret.empty() || cbo.secret != cbn.secret) {
    d.Check("callback-allowed-prefixes", lo.spec.callback_allowed_prefixes,
            ln.spec.callback_allowed_prefixes, later);
    ln.spec.callback_allowed_prefixes = lo.spec.callback_allowed_prefixes;
  } else {
    service_limits |=
        d.Check("callback-allowed-prefixes", lo.spec.callback_allowed_prefixes,
                ln.spec.callback_allowed_prefixes, live);
  }
  d.Check("callback-max-attempts", cbo.max_attempts, cbn.max_attempts, later);
  d.Check("callback-max-retry-time", cbo.max_retry_time, cbn.max_retry_time,
          later);
  d.Check("callback-backoff", cbo.first_backoff, cbn.first_backoff, later);
  d.Check("callback-max-backoff", cbo.max_backoff, cbn.max_backoff, later);
  d.Check("callback-timeout", cbo.timeout, cbn.timeout, later);
  d.Check("callback-max-pending", cbo.max_pending, cbn.max_pending, later);
  d.Check("callback-max-pending-bytes", cbo.max_pending_bytes,
          cbn.max_pending_bytes, later);
  service_limits |= d.Check("max-jobs-per-request", lo.max_jobs_per_request,
                            ln.max_jobs_per_request, live);
  service_limits |=
      d.Check("default-window", lo.default_window, ln.default_window, live);
  service_limits |= d.Check("max-window", lo.max_window, ln.max_window, live);
  service_limits |=
      d.Check("quota-max-live", lo.quota_max_live, ln.quota_max_live, live);
  service_limits |= d.Check("quota-submit-rate", lo.quota_submit_rate,
                            ln.quota_submit_rate, live);
  service_limits |= d.Check("max-streams-per-caller", lo.max_streams_per_caller,
                            ln.max_streams_per_caller, live);
  service_limits |=
      d.Check("max-streams", lo.max_streams, ln.max_streams, live);
  service_limits |=
      d.Check("quota-max-bytes", lo.quota_max_bytes, ln.quota_max_bytes, live);
  service_limits |= d.Check("stream-buffer-bytes", lo.stream_buffer_bytes,
                            ln.stream_buffer_bytes, live);
  service_limits |=
      d.Check("total-stream-buffer-bytes", lo.total_stream_buffer_bytes,
              ln.total_stream_buffer_bytes, live);
  service_limits |=
      d.Check("max-labels", lo.spec.max_labels, ln.spec.max_labels, live);
  service_limits |= d.Check("max-label-bytes", lo.spec.max_label_bytes,
                            ln.spec.max_label_bytes, live);
  service_limits |=
      d.Check("max-idempotency-key-bytes", lo.spec.max_idempotency_key_bytes,
              ln.spec.max_idempotency_key_bytes, live);
  service_limits |= d.Check("max-value-depth", lo.spec.max_value_depth,
                            ln.spec.max_value_depth, live);
  service_limits |= d.Check("max-args-bytes", lo.spec.max_args_bytes,
                            ln.spec.max_args_bytes, live);
  service_limits |=
      d.Check("retry-max-attempts-limit", lo.spec.max_attempts_limit,
              ln.spec.max_attempts_limit, live);
  service_limits |=
      d.Check("max-delay", lo.spec.max_delay, ln.spec.max_delay, live);
  service_limits |= d.Check("max-dependencies", lo.spec.max_dependencies,
                            ln.spec.max_dependencies, live);
  service_limits |= d.Check("retry-*", lo.spec.default_retry.ShortDebugString(),
                            ln.spec.default_retry.ShortDebugString(), live);
  service_limits |= d.Check("task-retries", TaskRetries(lo.spec.task_retries),
                            TaskRetries(ln.spec.task_retries), live);
  if (service_limits) service.SetLimits(ln);
  // Callers: counts only, never the secrets.
  std::vector<std::string> caller_changes;
  if (current.auth.tokens != fresh.auth.tokens) {
    caller_changes.push_back(fmt::format("--auth-token: {} -> {} entries",
                                         current.auth.tokens.size(),
                                         fresh.auth.tokens.size()));
  }
  d.Check("tls-identity", current.auth.tls_identities,
          fresh.auth.tls_identities, caller_changes);
  d.Check("unix-socket-auth", current.auth.unix_socket_auth,
          fresh.auth.unix_socket_auth, caller_changes);
  bool callers_applied = false;
  if (!caller_changes.empty()) {
    // Never down to "anyone may submit" while listening beyond loopback.
    const bool authenticated =
        !fresh.auth.tokens.empty() || !fresh.auth.tls_identities.empty();
    absl::Status s =
        current.tcp_address.empty()
            ? absl::OkStatus()
            : CheckTcpExposure(current.tcp_address, !current.tls_cert.empty(),
                               authenticated);
    if (s.ok() && !current.http_listen.empty()) {
      s = CheckHttpExposure(current.http_listen, !current.tls_cert.empty(),
                            authenticated);
    }
    if (s.ok()) s = auth.Set(fresh.auth);  // Parsed before: not expected.
    if (s.ok()) {
      callers_applied = true;
      live.insert(live.end(), caller_changes.begin(), caller_changes.end());
    } else {
      r.refused.push_back(fmt::format("{}: {}",
                                      absl::StrJoin(caller_changes, ", "),
                                      std::string(s.message())));
    }
  }
  bool exec_changed =
      d.Check("exec-allow", current.exec.allow, fresh.exec.allow, live);
  exec_changed |= d.Check("exec-env-allow", current.exec.env_allow,
                          fresh.exec.env_allow, live);
  exec_changed |= d.Check("exec-kill-grace", current.exec.kill_grace,
                          fresh.exec.kill_grace, live);
  if (exec_changed) exec.Set(fresh.exec);
  bool http_applied = false;
  if (current.http_allow != fresh.http_allow) {
    // Parsed before (ParseConfig): not expected to fail.
    absl::StatusOr<AddressPolicy> policy =
        AddressPolicy::Parse(fresh.http_allow);
    if (policy.ok()) {
      http.Set(*std::move(policy));
      http_applied =
          d.Check("http-allow", current.http_allow, fresh.http_allow, live);
    } else {
      r.refused.push_back(std::string(policy.status().message()));
    }
  }
  d.Check("shutdown-grace", current.shutdown_grace, fresh.shutdown_grace, live);

  // What only a restart changes.
  const ProcessPoolOptions& po = current.process_pool;
  const ProcessPoolOptions& pn = fresh.process_pool;
  d.Check("log-format", current.log_format, fresh.log_format, later);
  d.Check("unix-socket", current.unix_socket, fresh.unix_socket, later);
  d.Check("tcp", current.tcp_address, fresh.tcp_address, later);
  d.Check("http-listen", current.http_listen, fresh.http_listen, later);
  d.Check("process-workers", po.workers, pn.workers, later);
  d.Check("spare-workers", po.spare_workers, pn.spare_workers, later);
  d.Check("max-jobs-per-worker", po.max_jobs_per_worker, pn.max_jobs_per_worker,
          later);
  d.Check("max-worker-rss", po.max_worker_rss, pn.max_worker_rss, later);
  d.Check("worker-rlimit-as", po.max_address_space, pn.max_address_space,
          later);
  d.Check("worker-rlimit-cpu", po.max_cpu_seconds, pn.max_cpu_seconds, later);
  d.Check("worker-rlimit-nofile", po.max_open_files, pn.max_open_files, later);
  d.Check("cancel-grace", po.cancel_grace, pn.cancel_grace, later);
  d.Check("kill-grace", po.kill_grace, pn.kill_grace, later);
  d.Check("worker-ping-interval", po.ping_interval, pn.ping_interval, later);
  d.Check("worker-ping-timeout", po.ping_timeout, pn.ping_timeout, later);
  d.Check("quarantine-after", po.quarantine_after, pn.quarantine_after, later);
  d.Check("max-chunk", po.max_chunk, pn.max_chunk, later);
  d.Check("pipeline-depth", po.pipeline_depth, pn.pipeline_depth, later);
  d.Check("reactor-threads", current.reactor.threads, fresh.reactor.threads,
          later);
  d.Check("reactor-blocking-threads", current.reactor.blocking_threads,
          fresh.reactor.blocking_threads, later);
  d.Check("event-log-size", so.event_log_size, sn.event_log_size, later);
  d.Check("max-message-bytes", lo.max_message_bytes, ln.max_message_bytes,
          later);
  d.Check("state-dir", current.state_dir, fresh.state_dir, later);
  d.Check("durability", std::string(DurabilityName(current.durability)),
          std::string(DurabilityName(fresh.durability)), later);
  d.Check("journal-max-bytes", current.journal_max_bytes,
          fresh.journal_max_bytes, later);
  d.Check("journal-outage-grace",
          absl::FormatDuration(current.journal_outage_grace),
          absl::FormatDuration(fresh.journal_outage_grace), later);
  d.Check("journal-linger", absl::FormatDuration(current.journal_linger),
          absl::FormatDuration(fresh.journal_linger), later);
  d.Check("testing-tasks", current.testing_tasks, fresh.testing_tasks, later);
  const cluster::ClusterOptions& kc = current.cluster;
  const cluster::ClusterOptions& kn = fresh.cluster;
  d.Check("cluster", kc.url, kn.url, later);
  d.Check("node-name", kc.node_name, kn.node_name, later);
  d.Check("cluster-partitions", kc.partitions, kn.partitions, later);
  d.Check("cluster-heartbeat", absl::FormatDuration(kc.heartbeat),
          absl::FormatDuration(kn.heartbeat), later);
  d.Check("cluster-node-ttl", absl::FormatDuration(kc.node_ttl),
          absl::FormatDuration(kn.node_ttl), later);
  d.Check("cluster-reaper-period", absl::FormatDuration(kc.reaper_period),
          absl::FormatDuration(kn.reaper_period), later);
  d.Check("cluster-max-deliveries", kc.max_deliveries, kn.max_deliveries,
          later);
  d.Check("cluster-results-ttl", absl::FormatDuration(kc.results_ttl),
          absl::FormatDuration(kn.results_ttl), later);
  d.Check("plugin", absl::StrJoin(current.plugins, ","),
          absl::StrJoin(fresh.plugins, ","), later);
  d.Check("python-tasks", absl::StrJoin(current.python_tasks.modules, ","),
          absl::StrJoin(fresh.python_tasks.modules, ","), later);
  d.Check("python-path", absl::StrJoin(current.python_tasks.paths, ","),
          absl::StrJoin(fresh.python_tasks.paths, ","), later);
  d.Check("unix-socket-group", current.unix_socket_group,
          fresh.unix_socket_group, later);
  d.Check("worker-user", current.worker_user, fresh.worker_user, later);
  d.Check("tls-cert", current.tls_cert, fresh.tls_cert, later);
  d.Check("tls-key", current.tls_key, fresh.tls_key, later);
  d.Check("tls-client-ca", current.tls_client_ca, fresh.tls_client_ca, later);
  const ConnectionOptions& co = current.connections;
  const ConnectionOptions& cn = fresh.connections;
  d.Check("max-connections", co.max_connections, cn.max_connections, later);
  d.Check("max-connections-per-peer", co.max_connections_per_peer,
          cn.max_connections_per_peer, later);
  d.Check("max-calls-per-connection", co.max_calls_per_connection,
          cn.max_calls_per_connection, later);
  d.Check("max-connection-idle", co.idle_timeout, cn.idle_timeout, later);
  d.Check("max-connection-age", co.max_age, cn.max_age, later);
  d.Check("max-connection-age-grace", co.max_age_grace, cn.max_age_grace,
          later);
  d.Check("keepalive-time", co.keepalive_time, cn.keepalive_time, later);
  d.Check("keepalive-timeout", co.keepalive_timeout, cn.keepalive_timeout,
          later);
  d.Check("handshake-timeout", co.handshake_timeout, cn.handshake_timeout,
          later);

  // What runs now: the live part of `fresh`, the rest as it was.
  DaemonConfig now = current;
  now.log_level = fresh.log_level;
  now.thread_workers = fresh.thread_workers;
  if (current.reactor.threads > 0)
    now.reactor.max_jobs = fresh.reactor.max_jobs;
  now.scheduler.max_queued = sn.max_queued;
  now.scheduler.retention_ttl = sn.retention_ttl;
  now.scheduler.max_retained = sn.max_retained;
  now.scheduler.max_live_bytes = sn.max_live_bytes;
  now.scheduler.max_retained_bytes = sn.max_retained_bytes;
  now.scheduler.max_retained_result_bytes = sn.max_retained_result_bytes;
  now.scheduler.output_bytes_per_job = sn.output_bytes_per_job;
  now.scheduler.max_output_bytes = sn.max_output_bytes;
  now.scheduler.caller_weights = sn.caller_weights;
  const size_t message_bytes = now.service.max_message_bytes;
  now.service = ln;
  now.service.max_message_bytes = message_bytes;
  now.exec = fresh.exec;
  if (http_applied) now.http_allow = fresh.http_allow;
  now.shutdown_grace = fresh.shutdown_grace;
  if (callers_applied) now.auth = fresh.auth;
  current = std::move(now);
  return r;
}

}  // namespace jobd
