// jobctl top: a refreshing view of the daemon in the terminal, like top(1)
// for jobs. Each refresh takes a sample (GetStats, and ListJobs of the
// RUNNING and QUEUED jobs the caller may see) and draws the frame that
// top_format.h renders from the last samples.
//
// The terminal is driven with plain ANSI/VT100 sequences (alternate
// screen, cursor home, erase to end of line/screen, cursor hidden): every
// terminal emulator and tmux/screen understand them, over SSH too, and
// they need no terminfo database nor a curses library for a screen that is
// redrawn whole at each refresh. Keys are read from stdin in raw mode
// (no echo, no line buffering, no signals from keys: Ctrl-C is read as a
// key). SIGWINCH redraws at the new size at once; SIGINT/SIGTERM (the
// interrupt thread, interrupt.h) quit like `q`. Leaving, on every path
// that returns (also when a sample fails: the error is printed after),
// restores the terminal's modes, the cursor and the main screen; only a
// second SIGINT/SIGTERM before that exits at once (130) without it.
//
// Thread-safety: runs on main's thread; the SIGWINCH handler and the
// interrupt action only write a byte to the wake pipe.
//
// Without a terminal on stdin and stdout, or with --once, it prints one
// frame as plain text (no sequences, no width limit) and exits.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/jobctl/args.h"
#include "client/jobctl/command.h"
#include "client/jobctl/exit_codes.h"
#include "client/jobctl/interrupt.h"
#include "client/jobctl/top_format.h"
#include "spdlog/fmt/fmt.h"

namespace jobd::jobctl {
namespace {

using jobd::client::Client;

constexpr size_t kListLimit = 500;  // Jobs of each state listed per sample.
constexpr absl::Duration kMinInterval = absl::Milliseconds(100);

struct TopOptions {
  std::string interval = "2s";
  bool once = false;
};

// Jobs in `state`, at most kListLimit; *truncated if there were more.
absl::StatusOr<std::vector<v1::Job>> ListIn(Client& client, v1::JobState state,
                                            bool* truncated) {
  jobd::client::ListJobsFilter filter;
  filter.states = {state};
  filter.limit = kListLimit + 1;
  absl::StatusOr<std::vector<v1::Job>> jobs = client.ListJobs(filter);
  if (!jobs.ok()) return jobs.status();
  *truncated = jobs->size() > kListLimit;
  if (*truncated) jobs->resize(kListLimit);
  return jobs;
}

absl::StatusOr<TopSample> TakeSample(Client& client) {
  TopSample sample;
  absl::StatusOr<v1::GetStatsResponse> stats = client.GetStats();
  if (!stats.ok()) return stats.status();
  sample.at = absl::Now();
  sample.stats = *std::move(stats);
  absl::StatusOr<std::vector<v1::Job>> running =
      ListIn(client, v1::JOB_STATE_RUNNING, &sample.running_truncated);
  if (!running.ok()) return running.status();
  sample.running = *std::move(running);
  absl::StatusOr<std::vector<v1::Job>> queued =
      ListIn(client, v1::JOB_STATE_QUEUED, &sample.queued_truncated);
  if (!queued.ok()) return queued.status();
  sample.queued = *std::move(queued);
  return sample;
}

// The write end of the pipe that wakes the refresh loop: 'q' to quit
// (SIGINT/SIGTERM), 'w' to redraw (SIGWINCH). Set before the handlers.
int g_wake_fd = -1;

void OnWinch(int) {
  const int saved = errno;
  const char c = 'w';
  [[maybe_unused]] ssize_t n = write(g_wake_fd, &c, 1);
  errno = saved;
}

// The terminal in top's modes for as long as this lives.
class Screen {
 public:
  Screen() {
    if (tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~(ICANON | ECHO | ISIG | IEXTEN);
      raw.c_iflag &= ~(IXON | ICRNL);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      restore_modes_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0;
    }
    // Alternate screen, cursor hidden, screen cleared.
    Write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
  }
  ~Screen() {
    // Cursor shown, main screen back (with what it showed before).
    Write("\x1b[?25h\x1b[?1049l");
    if (restore_modes_) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  static void Write(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }

  // Columns and rows; 80x24 if the terminal does not say.
  static std::pair<size_t, size_t> Size() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 &&
        ws.ws_row > 0) {
      return {ws.ws_col, ws.ws_row};
    }
    return {80, 24};
  }

  // Draws `lines` from the top left, erasing what was there.
  static void Draw(const std::vector<std::string>& lines) {
    std::string frame = "\x1b[H";
    for (size_t i = 0; i < lines.size(); ++i) {
      frame += lines[i];
      frame += "\x1b[K";
      if (i + 1 < lines.size()) frame += "\r\n";
    }
    frame += "\x1b[J";
    Write(frame);
  }

 private:
  termios saved_{};
  bool restore_modes_ = false;
};

int RunOnce(Client& client) {
  absl::StatusOr<TopSample> sample = TakeSample(client);
  if (!sample.ok()) return Fail(sample.status());
  TopHistory history;
  history.Add(*std::move(sample));
  TopView view{.address = client.address(), .width = 0, .height = 0};
  std::string out;
  for (const std::string& line : RenderTopFrame(history, view)) {
    out += line;
    out += '\n';
  }
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

int RunLive(Client& client, absl::Duration interval) {
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Fail(absl::InternalError("jobctl top: cannot make a pipe"));
  }
  g_wake_fd = wake[1];
  OnInterrupt([fd = wake[1]] {
    const char c = 'q';
    [[maybe_unused]] ssize_t n = write(fd, &c, 1);
  });
  struct sigaction winch {};
  winch.sa_handler = OnWinch;
  sigemptyset(&winch.sa_mask);
  struct sigaction old_winch {};
  sigaction(SIGWINCH, &winch, &old_winch);

  absl::Status failed;
  {
    Screen screen;
    TopHistory history;
    bool quit = false;
    bool resample = true;
    absl::Time next = absl::Now();
    while (!quit) {
      if (resample) {
        absl::StatusOr<TopSample> sample = TakeSample(client);
        if (!sample.ok()) {
          failed = sample.status();  // Printed once the main screen is back.
          break;
        }
        history.Add(*std::move(sample));
        next = absl::Now() + interval;
        resample = false;
      }
      const auto [columns, rows] = Screen::Size();
      Screen::Draw(RenderTopFrame(history, {.address = client.address(),
                                            .width = columns,
                                            .height = rows,
                                            .show_keys = true}));
      // Wait for the next refresh, a key or a signal.
      bool redraw = false;
      while (!quit && !redraw) {
        const absl::Duration left = next - absl::Now();
        if (left <= absl::ZeroDuration()) {
          resample = true;
          break;
        }
        pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake[0], POLLIN, 0}};
        const int ready =
            poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(left) + 1));
        if (ready < 0 && errno != EINTR) break;
        if (ready <= 0) continue;
        char buf[64];
        if (fds[0].revents & (POLLHUP | POLLERR)) quit = true;
        if (fds[0].revents & POLLIN) {
          const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
          if (n == 0) quit = true;  // stdin closed.
          for (ssize_t i = 0; i < n; ++i) {
            // q, Q, Ctrl-C (raw mode: a key, not a signal).
            if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 0x03) quit = true;
          }
        }
        if (fds[1].revents & POLLIN) {
          const ssize_t n = read(wake[0], buf, sizeof(buf));
          for (ssize_t i = 0; i < n; ++i) {
            if (buf[i] == 'q') quit = true;
            if (buf[i] == 'w') redraw = true;
          }
        }
      }
    }
  }
  g_wake_fd = -1;
  sigaction(SIGWINCH, &old_winch, nullptr);
  OnInterrupt(nullptr);
  // The pipe stays open: the signal thread may have taken the action just
  // before it was cleared and still write to it; jobctl exits next.
  if (!failed.ok()) return Fail(failed);
  return kExitOk;
}

int RunTop(const Globals& g, const TopOptions& o) {
  absl::StatusOr<absl::Duration> interval =
      ParseDurationArg(o.interval, "--interval");
  if (!interval.ok()) return Usage(Msg(interval.status()));
  if (*interval < kMinInterval || *interval == absl::InfiniteDuration()) {
    return Usage(fmt::format("--interval: must be at least {} and finite",
                             absl::FormatDuration(kMinInterval)));
  }
  if (g.json) {
    return Usage("top has no --json output (see: jobctl --json stats)");
  }
  std::unique_ptr<Client> client;
  if (const int code = Connect(g, &client); code != kExitOk) return code;
  if (o.once || !isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
    return RunOnce(*client);
  }
  return RunLive(*client, *interval);
}

}  // namespace

void AddTopCommand(CLI::App& app, CommandSet& commands) {
  auto options = std::make_shared<TopOptions>();
  CLI::App* top = commands.Add(
      app, "top",
      "Refreshing view of executors, queues, throughput and running jobs "
      "(q quits)",
      [options](const Globals& g) { return RunTop(g, *options); });
  top->add_option("--interval", options->interval,
                  "Time between refreshes (at least 100ms)")
      ->capture_default_str();
  top->add_flag("--once", options->once,
                "Print one frame as plain text and exit (also without a "
                "terminal)");
}

}  // namespace jobd::jobctl
