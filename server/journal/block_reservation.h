// BlockReservation: numbers handed out in increasing order (job ids, event
// sequences) and reserved in the journal a block ahead of use, so that a
// restart never gives one again, whether or not what it named was ever
// journaled (an in-memory job, a forgotten one, a progress event), while
// the reservation costs one small write per half block instead of one with
// every commit. It remembers which journal batch (ticket) made each
// number's reservation durable: what carries the number waits for it,
// durable long before as a rule.
//
// Thread-safety: none; its owner's lock guards it. Ownership: a value; the
// reserve function it is given is called, not kept.
#ifndef JOBD_SERVER_JOURNAL_BLOCK_RESERVATION_H_
#define JOBD_SERVER_JOURNAL_BLOCK_RESERVATION_H_

#include <algorithm>
#include <cstdint>

#include "absl/functional/function_ref.h"

namespace jobd {

class BlockReservation {
 public:
  explicit BlockReservation(uint64_t block) : block_(block) {}

  // Before `n` is handed out: when it came within half a block of the
  // reservation's end, reserves up to n + block through `reserve` (which
  // returns the journal batch it joined).
  void Before(uint64_t n, absl::FunctionRef<uint64_t(uint64_t)> reserve) {
    if (n + block_ / 2 <= reserved_) return;
    previous_reserved_ = reserved_;
    previous_ticket_ = ticket_;
    reserved_ = n + block_;
    ticket_ = reserve(reserved_);
  }
  // The batch that reserved `n` (0: durable since the start).
  uint64_t TicketOf(uint64_t n) const {
    return n <= previous_reserved_ ? previous_ticket_ : ticket_;
  }
  // Numbers up to `through` were reserved before this start (durable).
  void Restored(uint64_t through) {
    reserved_ = previous_reserved_ = std::max(reserved_, through);
    ticket_ = previous_ticket_ = 0;
  }

 private:
  const uint64_t block_;
  // Up to reserved_ by batch ticket_, up to previous_reserved_ by the one
  // before (numbers handed out after the latest reservation was made may
  // still be within the previous one).
  uint64_t reserved_ = 0, ticket_ = 0;
  uint64_t previous_reserved_ = 0, previous_ticket_ = 0;
};

}  // namespace jobd

#endif  // JOBD_SERVER_JOURNAL_BLOCK_RESERVATION_H_
