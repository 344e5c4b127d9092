#include "client/jobctl/interrupt.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "client/jobctl/exit_codes.h"

namespace jobd::jobctl {
namespace {

absl::Mutex g_interrupt_mu;
std::function<void()> g_on_interrupt ABSL_GUARDED_BY(g_interrupt_mu);

}  // namespace

void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int interrupts = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::function<void()> action;
      {
        absl::MutexLock lock(&g_interrupt_mu);
        action = g_on_interrupt;
      }
      if (!action || ++interrupts > 1) {
        std::fflush(stdout);
        std::_Exit(kExitInterrupted);
      }
      action();
    }
  }).detach();
}

void OnInterrupt(std::function<void()> action) {
  absl::MutexLock lock(&g_interrupt_mu);
  g_on_interrupt = std::move(action);
}

}  // namespace jobd::jobctl
