// Unit tests of BlockReservation: when it reserves, and which batch each
// number waits for.
#include "server/journal/block_reservation.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace jobd {
namespace {

// A journal stand-in that numbers its reservations as batches 1, 2, ...
struct Reservations {
  std::vector<uint64_t> up_to;
  uint64_t operator()(uint64_t n) {
    up_to.push_back(n);
    return up_to.size();
  }
};

TEST(BlockReservationTest, ReservesABlockAheadAtTheFirstAndEachHalfBlock) {
  BlockReservation r(100);
  Reservations journal;
  for (uint64_t n = 1; n <= 200; ++n) {
    r.Before(n, [&](uint64_t up_to) { return journal(up_to); });
  }
  // 1 reserves through 101; 52 comes within half a block: through 152;
  // then 103 (through 203) and 154 (through 254).
  EXPECT_EQ(journal.up_to, (std::vector<uint64_t>{101, 152, 203, 254}));
}

TEST(BlockReservationTest, ANumberWaitsForTheBatchThatReservedIt) {
  BlockReservation r(100);
  Reservations journal;
  auto before = [&](uint64_t n) {
    r.Before(n, [&](uint64_t up_to) { return journal(up_to); });
  };
  before(1);  // Through 101: batch 1.
  EXPECT_EQ(r.TicketOf(1), 1u);
  before(52);  // Through 152: batch 2; 52 was within the first already.
  EXPECT_EQ(r.TicketOf(52), 1u);
  EXPECT_EQ(r.TicketOf(101), 1u);
  EXPECT_EQ(r.TicketOf(102), 2u);
}

TEST(BlockReservationTest, WhatARestartReadBackNeedsNoWait) {
  BlockReservation r(100);
  r.Restored(500);
  EXPECT_EQ(r.TicketOf(501), 0u);
  Reservations journal;
  r.Before(501, [&](uint64_t up_to) { return journal(up_to); });
  EXPECT_EQ(journal.up_to, (std::vector<uint64_t>{601}));
  EXPECT_EQ(r.TicketOf(450), 0u);
  EXPECT_EQ(r.TicketOf(501), 1u);
}

}  // namespace
}  // namespace jobd
