// Ctrl-C in jobctl. SIGINT and SIGTERM are blocked in every thread and
// taken by one sigwait thread: the first runs the registered interrupt
// action (e.g. cancel the map stream), or exits 130 if there is none; a
// second one exits 130.
//
// Thread-safety: OnInterrupt may be called from any thread; the action runs
// on the signal thread. StartSignalThread must be called once, before any
// other thread starts (so that they inherit the blocked signal mask).
// Ownership: the action is copied and kept until replaced; the signal
// thread is detached and lives as long as the process.
#ifndef JOBD_CLIENT_JOBCTL_INTERRUPT_H_
#define JOBD_CLIENT_JOBCTL_INTERRUPT_H_

#include <functional>

namespace jobd::jobctl {

void StartSignalThread();

// What the first Ctrl-C does; nullptr: exit 130 at once.
void OnInterrupt(std::function<void()> action);

}  // namespace jobd::jobctl

#endif  // JOBD_CLIENT_JOBCTL_INTERRUPT_H_
