// What `jobctl top` shows, as a pure function: from the samples it took of
// the daemon (GetStats and the jobs it lists) to the lines of one frame,
// fitted to a terminal's width and height. No terminal, no RPC, no clock:
// the sample carries the time it was taken, so frames are unit-tested.
//
// Throughput is the number of jobs that ended (succeeded + failed +
// cancelled, per executor: completed + failed + cancelled) between the
// oldest and the newest sample kept, divided by the time between them.
//
// Thread-safety: stateless functions; TopHistory is a plain value, used by
// one thread. Ownership: everything by value.
#ifndef JOBD_CLIENT_JOBCTL_TOP_FORMAT_H_
#define JOBD_CLIENT_JOBCTL_TOP_FORMAT_H_

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "jobd/v1/jobd.pb.h"

namespace jobd::jobctl {

// One look at the daemon.
struct TopSample {
  absl::Time at;  // When it was taken (the client's clock).
  v1::GetStatsResponse stats;
  std::vector<v1::Job> running;    // RUNNING jobs the caller may list.
  std::vector<v1::Job> queued;     // QUEUED jobs the caller may list.
  bool running_truncated = false;  // More than the listed ones exist.
  bool queued_truncated = false;
};

// The last samples, oldest first, at most `capacity` (>= 2) of them.
class TopHistory {
 public:
  explicit TopHistory(size_t capacity = 5) : capacity_(capacity) {}
  void Add(TopSample sample);
  bool empty() const { return samples_.empty(); }
  const TopSample& newest() const { return samples_.back(); }
  const TopSample& oldest() const { return samples_.front(); }
  size_t size() const { return samples_.size(); }

 private:
  size_t capacity_;
  std::deque<TopSample> samples_;
};

// Jobs ended per second between two samples over all executors, or over
// `executor` alone; nullopt when no time passed between them, the daemon
// restarted (a counter went down) or the executor is missing from one.
std::optional<double> EndedPerSecond(const TopSample& older,
                                     const TopSample& newer);
std::optional<double> EndedPerSecond(const TopSample& older,
                                     const TopSample& newer,
                                     v1::Executor executor);

// "12.5", "0.40", "1234" or "-".
std::string RateText(std::optional<double> per_second);

// `text` with every control character (C0, DEL, C1) as '?': what the
// daemon names (tasks, callers) can never move the cursor or clear the
// operator's screen.
std::string Printable(std::string_view text);

// `text` cut to `columns` code points (a cut line ends in '~'); never
// splits a UTF-8 sequence. Each code point counts as one column.
std::string FitWidth(std::string_view text, size_t columns);

struct TopView {
  std::string address;     // Shown in the title line.
  size_t width = 80;       // Columns; lines are cut to it (0: not cut).
  size_t height = 0;       // Rows; 0: no limit (plain, one-shot output).
  bool show_keys = false;  // Add the "q: quit" hint line.
};

// The frame's lines (without newlines), at most view.height of them when
// it is set: the title, job totals and throughput, the executors, the
// busiest tasks (running, queued, longest run) and the running jobs
// (longest first); tables that do not fit end in an "... N more" line.
std::vector<std::string> RenderTopFrame(const TopHistory& history,
                                        const TopView& view);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_TOP_FORMAT_H_
