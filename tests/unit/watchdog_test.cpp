// The systemd watchdog gate (core/sd_notify.h): WATCHDOG=1 is withheld while
// any worker's loop has not ticked for longer than the stale threshold.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/sd_notify.h"

using wsgate::core::systemd::first_stale_worker;

TEST(Watchdog, AllFreshIsLive) {
    std::vector<uint64_t> ticks = {1000, 1050, 990};
    EXPECT_EQ(first_stale_worker(ticks, 1100, 200), -1);
}

TEST(Watchdog, OneWedgedWorkerWithholdsTheKeepAlive) {
    std::vector<uint64_t> ticks = {5000, 2000, 4990};
    EXPECT_EQ(first_stale_worker(ticks, 5000, 1000), 1);
    ticks[0] = 100;
    EXPECT_EQ(first_stale_worker(ticks, 5000, 1000), 0) << "the first stale one is named";
}

TEST(Watchdog, ExactlyAtTheThresholdIsStillLive) {
    std::vector<uint64_t> ticks = {4000};
    EXPECT_EQ(first_stale_worker(ticks, 5000, 1000), -1);
    EXPECT_EQ(first_stale_worker(ticks, 5001, 1000), 0);
}

TEST(Watchdog, ATickNewerThanNowIsNotStale) {
    // Workers stamp with a coarse clock that may read slightly ahead of the main thread's.
    std::vector<uint64_t> ticks = {5004};
    EXPECT_EQ(first_stale_worker(ticks, 5000, 1000), -1);
}

TEST(Watchdog, NoWorkersIsLive) {
    std::vector<uint64_t> ticks;
    EXPECT_EQ(first_stale_worker(ticks, 5000, 1000), -1);
}
