#include "client/jobctl/top_format.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_split.h"
#include "client/jobctl/format.h"
#include "client/json.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::FromProtoTime;
using Rows = std::vector<std::vector<std::string>>;

uint64_t Ended(const v1::GetStatsResponse& s) {
  return s.succeeded() + s.failed() + s.cancelled();
}

const v1::ExecutorStats* FindExecutor(const v1::GetStatsResponse& s,
                                      v1::Executor executor) {
  for (const v1::ExecutorStats& e : s.executors()) {
    if (e.executor() == executor) return &e;
  }
  return nullptr;
}

std::optional<double> Rate(uint64_t before, uint64_t after, absl::Duration d) {
  if (d <= absl::ZeroDuration() || after < before) return std::nullopt;
  return static_cast<double>(after - before) / absl::ToDoubleSeconds(d);
}

absl::Duration RunFor(const v1::Job& job, absl::Time now) {
  if (!job.has_start_time()) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), now - FromProtoTime(job.start_time()));
}

std::string Count(size_t n, bool truncated) {
  return truncated ? fmt::format("{}+", n) : std::to_string(n);
}

// A table's lines: the header and as many rows as `max_lines` allows; if
// some do not fit, the last line says how many were left out.
std::vector<std::string> TableLines(const Rows& rows, size_t max_lines) {
  std::vector<std::string> lines =
      absl::StrSplit(FormatTable(rows), '\n', absl::SkipEmpty());
  if (max_lines == 0 || lines.size() <= max_lines) return lines;
  if (max_lines == 1) return {lines.front()};
  const size_t kept = max_lines - 1;  // Header and rows, then the "more".
  const size_t more = lines.size() - kept;
  lines.resize(kept);
  lines.push_back(fmt::format("... {} more", more));
  return lines;
}

struct TaskLoad {
  size_t running = 0;
  size_t queued = 0;
  absl::Duration longest;
};

}  // namespace

void TopHistory::Add(TopSample sample) {
  samples_.push_back(std::move(sample));
  while (samples_.size() > std::max<size_t>(capacity_, 2)) {
    samples_.pop_front();
  }
}

std::optional<double> EndedPerSecond(const TopSample& older,
                                     const TopSample& newer) {
  return Rate(Ended(older.stats), Ended(newer.stats), newer.at - older.at);
}

std::optional<double> EndedPerSecond(const TopSample& older,
                                     const TopSample& newer,
                                     v1::Executor executor) {
  const v1::ExecutorStats* a = FindExecutor(older.stats, executor);
  const v1::ExecutorStats* b = FindExecutor(newer.stats, executor);
  if (a == nullptr || b == nullptr) return std::nullopt;
  return Rate(a->completed() + a->failed() + a->cancelled(),
              b->completed() + b->failed() + b->cancelled(),
              newer.at - older.at);
}

std::string RateText(std::optional<double> per_second) {
  if (!per_second) return "-";
  const double r = *per_second;
  if (r >= 100) return fmt::format("{:.0f}", r);
  if (r >= 10) return fmt::format("{:.1f}", r);
  return fmt::format("{:.2f}", r);
}

std::string Printable(std::string_view text) {
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    if (c < 0x20 || c == 0x7F) {
      out[i] = '?';
    } else if (c == 0xC2 && i + 1 < out.size() &&
               static_cast<unsigned char>(out[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(out[i + 1]) <= 0x9F) {
      out.replace(i, 2, "?");  // U+0080..U+009F, the C1 controls.
    }
  }
  return out;
}

std::string FitWidth(std::string_view text, size_t columns) {
  // Byte offsets where each code point starts (continuation bytes are
  // 10xxxxxx).
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      starts.push_back(i);
    }
  }
  if (starts.size() <= columns) return std::string(text);
  if (columns == 0) return "";
  std::string out(text.substr(0, starts[columns - 1]));
  out += '~';
  return out;
}

std::vector<std::string> RenderTopFrame(const TopHistory& history,
                                        const TopView& view) {
  std::vector<std::string> lines;
  if (history.empty()) return lines;
  const TopSample& now = history.newest();
  const v1::GetStatsResponse& s = now.stats;
  const bool rated = history.size() >= 2;
  const absl::Duration window = now.at - history.oldest().at;

  lines.push_back(fmt::format(
      "jobd {} at {}  up {}  {}{}", s.version(), view.address,
      absl::FormatDuration(absl::Trunc(
          jobd::client::FromProtoDuration(s.uptime()), absl::Seconds(1))),
      absl::FormatTime("%H:%M:%S", now.at, absl::LocalTimeZone()),
      s.draining() ? "  DRAINING" : ""));
  lines.push_back(fmt::format(
      "jobs: {} live, {} succeeded, {} failed, {} cancelled, {} rejected; "
      "ended/s: {}{}",
      s.live(), s.succeeded(), s.failed(), s.cancelled(), s.rejected(),
      RateText(rated ? EndedPerSecond(history.oldest(), now) : std::nullopt),
      rated ? fmt::format(" (last {})", absl::FormatDuration(absl::Trunc(
                                            window, absl::Milliseconds(100))))
            : ""));

  lines.push_back("");
  Rows executors = {{"EXECUTOR", "WORKERS", "BUSY", "QUEUED", "ENDED/S",
                     "COMPLETED", "FAILED", "CANCELLED"}};
  for (const v1::ExecutorStats& e : s.executors()) {
    if (!e.enabled()) continue;
    executors.push_back(
        {ExecutorName(e.executor()), std::to_string(e.workers()),
         std::to_string(e.busy()), std::to_string(e.queued()),
         RateText(rated ? EndedPerSecond(history.oldest(), now, e.executor())
                        : std::nullopt),
         std::to_string(e.completed()), std::to_string(e.failed()),
         std::to_string(e.cancelled())});
  }
  for (std::string& line : TableLines(executors, 0)) lines.push_back(line);

  // The tasks with the most running jobs (then queued), at most five.
  std::map<std::string, TaskLoad> load;
  for (const v1::Job& j : now.running) {
    TaskLoad& t = load[j.spec().task()];
    ++t.running;
    t.longest = std::max(t.longest, RunFor(j, now.at));
  }
  for (const v1::Job& j : now.queued) ++load[j.spec().task()].queued;
  std::vector<std::pair<std::string, TaskLoad>> tasks(load.begin(), load.end());
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const auto& a, const auto& b) {
                     if (a.second.running != b.second.running) {
                       return a.second.running > b.second.running;
                     }
                     return a.second.queued > b.second.queued;
                   });
  constexpr size_t kMaxTasks = 5;
  Rows task_rows = {{"TASK", "RUNNING", "QUEUED", "LONGEST"}};
  for (size_t i = 0; i < tasks.size() && i < kMaxTasks; ++i) {
    const TaskLoad& t = tasks[i].second;
    task_rows.push_back({tasks[i].first, std::to_string(t.running),
                         std::to_string(t.queued),
                         t.running ? FormatDurationShort(t.longest) : "-"});
  }

  // Running jobs, the longest-running first.
  std::vector<const v1::Job*> running;
  for (const v1::Job& j : now.running) running.push_back(&j);
  std::stable_sort(running.begin(), running.end(),
                   [&](const v1::Job* a, const v1::Job* b) {
                     return RunFor(*a, now.at) > RunFor(*b, now.at);
                   });
  Rows job_rows = {{"ID", "TASK", "EXECUTOR", "CALLER", "RUN TIME"}};
  for (const v1::Job* j : running) {
    job_rows.push_back({j->id(), j->spec().task(), ExecutorName(j->executor()),
                        j->owner().empty() ? "-" : j->owner(),
                        FormatDurationShort(RunFor(*j, now.at))});
  }

  // What is left of the height goes to the tasks (up to their five), then
  // to the running jobs; the key hint takes the last line.
  const size_t keys = view.show_keys ? 1 : 0;
  size_t left = 0;
  if (view.height > 0) {
    const size_t used = lines.size() + keys;
    left = view.height > used ? view.height - used : 0;
  }
  const std::string tasks_title =
      fmt::format("busiest tasks (of {} running, {} queued jobs listed)",
                  Count(now.running.size(), now.running_truncated),
                  Count(now.queued.size(), now.queued_truncated));
  const std::string jobs_title = fmt::format(
      "running jobs: {}", Count(now.running.size(), now.running_truncated));
  auto section = [&](const std::string& title, const Rows& rows, size_t want) {
    // A blank line, the title, then the table.
    if (view.height > 0) {
      if (left < 3) return;
      const size_t fit = std::min(want, left - 2);
      lines.push_back("");
      lines.push_back(title);
      for (std::string& l : TableLines(rows, fit)) lines.push_back(l);
      left -= 2 + std::min(fit, rows.size());
      return;
    }
    lines.push_back("");
    lines.push_back(title);
    for (std::string& l : TableLines(rows, 0)) lines.push_back(l);
  };
  if (task_rows.size() > 1) {
    section(tasks_title, task_rows, task_rows.size());
  }
  section(jobs_title, job_rows, job_rows.size());
  if (view.height > 0 && lines.size() + keys > view.height) {
    lines.resize(view.height - keys);
  }
  if (view.show_keys) {
    if (view.height > 0) lines.resize(view.height - 1);  // Pads with blanks.
    lines.push_back("q: quit");
  }
  for (std::string& l : lines) {
    l = Printable(l);
    if (view.width > 0) l = FitWidth(l, view.width);
  }
  return lines;
}

}  // namespace jobd::jobctl
