// The desktop state machine, transition by transition: commands, the
// agent's answers, heartbeats and events, and the order between them.
#include "aula/broker/desktop_state.hpp"

#include <gtest/gtest.h>

namespace aula::broker {
namespace {

using S = DesktopState;
using H = Happening;

constexpr std::int64_t kHost = 7;
constexpr std::int64_t kOtherHost = 8;
const StateTiming kTiming{.grace = std::chrono::seconds(30),
                          .startTimeout = std::chrono::seconds(180)};

DesktopRecord record(S state, std::int64_t since = 1000, std::int64_t seq = 0,
                     std::optional<std::int64_t> host = kHost) {
  return DesktopRecord{.state = state,
                       .hostId = host,
                       .since = since,
                       .seq = seq,
                       .seqHostId = seq != 0 ? std::optional(kHost) : std::nullopt};
}

Observation command(H what, std::int64_t at = 1001, std::int64_t seq = 0) {
  return Observation{
      .what = what, .source = Source::kCommand, .at = at, .hostId = kHost, .seq = seq};
}

Observation heartbeat(H what, std::int64_t at, std::int64_t seq, std::int64_t host = kHost) {
  return Observation{
      .what = what, .source = Source::kHeartbeat, .at = at, .hostId = host, .seq = seq};
}

Observation event(H what, std::int64_t at, std::int64_t seq) {
  return Observation{.what = what, .source = Source::kEvent, .at = at, .hostId = kHost, .seq = seq};
}

TEST(DesktopStateTest, NamesRoundTripAndOnlyLiveStatesHoldAHost) {
  for (auto s : {S::kStopped, S::kStarting, S::kRunning, S::kStopping})
    EXPECT_EQ(parseDesktopState(desktopStateName(s)), s);
  EXPECT_FALSE(parseDesktopState("paused").has_value());
  EXPECT_TRUE(holdsHost(S::kStarting));
  EXPECT_TRUE(holdsHost(S::kRunning));
  EXPECT_FALSE(holdsHost(S::kStopping));
  EXPECT_FALSE(holdsHost(S::kStopped));
}

TEST(DesktopStateTest, AStartGoesFromStoppedThroughStartingToRunningWithTheAgentsNumber) {
  auto t = decide(record(S::kStopped, 1000, 0, std::nullopt), command(H::kStartRequested, 1001),
                  kTiming);
  ASSERT_TRUE(t.changed());
  EXPECT_EQ(t.record.state, S::kStarting);
  EXPECT_EQ(t.record.hostId, kHost);
  EXPECT_EQ(t.record.since, 1001);
  auto done = decide(t.record, command(H::kStartSucceeded, 1003, 500), kTiming);
  ASSERT_TRUE(done.changed());
  EXPECT_EQ(done.record.state, S::kRunning);
  EXPECT_EQ(done.record.seq, 500);
  EXPECT_EQ(done.record.seqHostId, kHost);
}

TEST(DesktopStateTest, StartingARunningOrStartingDesktopChangesNothingAndAStoppingOneIsRefused) {
  EXPECT_EQ(decide(record(S::kRunning), command(H::kStartRequested), kTiming).verdict,
            Verdict::kKeep);
  EXPECT_EQ(decide(record(S::kStarting), command(H::kStartRequested), kTiming).verdict,
            Verdict::kKeep);
  auto t = decide(record(S::kStopping), command(H::kStartRequested), kTiming);
  EXPECT_EQ(t.verdict, Verdict::kRefused);
  EXPECT_EQ(t.refusal, Refusal::kIsStopping);
}

TEST(DesktopStateTest, AFailedStartEndsStoppedUnlessSomethingNewerCameFirst) {
  auto t = decide(record(S::kStarting), command(H::kStartFailed), kTiming);
  ASSERT_TRUE(t.changed());
  EXPECT_EQ(t.record.state, S::kStopped);
  EXPECT_FALSE(decide(record(S::kStopping), command(H::kStartFailed), kTiming).changed());
}

TEST(DesktopStateTest, AStartThatEndsAfterAStopWasAskedForLeavesTheStopInCharge) {
  auto t = decide(record(S::kStopping), command(H::kStartSucceeded, 1005, 600), kTiming);
  EXPECT_EQ(t.verdict, Verdict::kKeep);
  EXPECT_EQ(t.record.state, S::kStopping);
  EXPECT_EQ(t.record.seq, 600);  // but the number is the newest seen
}

TEST(DesktopStateTest, AStopIsAskedForOnceAndAPowerOffMayFollowIt) {
  auto t = decide(record(S::kRunning), command(H::kStopRequested), kTiming);
  ASSERT_TRUE(t.changed());
  EXPECT_EQ(t.record.state, S::kStopping);
  auto again = decide(t.record, command(H::kStopRequested), kTiming);
  EXPECT_EQ(again.verdict, Verdict::kRefused);
  EXPECT_EQ(again.refusal, Refusal::kAlreadyStopping);
  auto force = decide(t.record, command(H::kForceStopRequested), kTiming);
  ASSERT_TRUE(force.changed());
  EXPECT_EQ(force.record.state, S::kStopping);
  EXPECT_EQ(decide(record(S::kStopped), command(H::kStopRequested), kTiming).verdict,
            Verdict::kKeep);
  EXPECT_EQ(decide(record(S::kStopped), command(H::kForceStopRequested), kTiming).verdict,
            Verdict::kKeep);
}

TEST(DesktopStateTest, AConfirmedStopEndsStoppedAndAnUnconfirmedOneFallsBackToRunning) {
  auto ok = decide(record(S::kStopping), command(H::kStopSucceeded, 1010, 700), kTiming);
  ASSERT_TRUE(ok.changed());
  EXPECT_EQ(ok.record.state, S::kStopped);
  EXPECT_EQ(ok.record.seq, 700);
  auto failed = decide(record(S::kStopping), command(H::kStopFailed), kTiming);
  ASSERT_TRUE(failed.changed());
  EXPECT_EQ(failed.record.state, S::kRunning);
}

// The race the issue names: a heartbeat sampled before a stop, delivered
// after it, must not mark the desktop running again, whenever it arrives.
TEST(DesktopStateTest, AHeartbeatSampledBeforeAStopNeverUndoesIt) {
  auto stopped = record(S::kStopped, 1010, 700);
  for (std::int64_t arrives : {1010, 1011, 1100, 5000}) {
    auto t = decide(stopped, heartbeat(H::kSeenRunning, arrives, 650), kTiming);
    EXPECT_EQ(t.verdict, Verdict::kStale) << "arriving at " << arrives;
  }
  // One sampled after the stop that still sees it running: started outside.
  auto later = decide(stopped, heartbeat(H::kSeenRunning, 1011, 750), kTiming);
  ASSERT_TRUE(later.changed());
  EXPECT_EQ(later.record.state, S::kRunning);
  EXPECT_EQ(later.record.seq, 750);
}

TEST(DesktopStateTest, AHeartbeatSampledBeforeAStartFinishedDoesNotStopTheDesktop) {
  auto running = record(S::kRunning, 1003, 500);
  EXPECT_EQ(decide(running, heartbeat(H::kSeenStopped, 1004, 480), kTiming).verdict,
            Verdict::kStale);
  auto gone = decide(running, heartbeat(H::kSeenStopped, 1004, 520), kTiming);
  ASSERT_TRUE(gone.changed()) << "a numbered heartbeat needs no grace";
  EXPECT_EQ(gone.record.state, S::kStopped);
}

TEST(DesktopStateTest, WithoutNumbersAMissingGuestCountsOnlyAfterTheGrace) {
  auto running = record(S::kRunning, 1000);
  EXPECT_EQ(decide(running, heartbeat(H::kSeenStopped, 1029, 0), kTiming).verdict, Verdict::kStale);
  EXPECT_TRUE(decide(running, heartbeat(H::kSeenStopped, 1030, 0), kTiming).changed());
  // An event is news of now: no grace.
  EXPECT_TRUE(decide(running, event(H::kSeenStopped, 1001, 0), kTiming).changed());
}

TEST(DesktopStateTest, EventsAreOrderedByTheirNumbersToo) {
  auto running = record(S::kRunning, 1003, 500);
  EXPECT_EQ(decide(running, event(H::kSeenStopped, 1004, 499), kTiming).verdict, Verdict::kStale)
      << "a 'stopped' event of the previous run";
  auto crashed = decide(running, event(H::kSeenStopped, 1004, 501), kTiming);
  ASSERT_TRUE(crashed.changed());
  EXPECT_EQ(crashed.record.state, S::kStopped);
}

TEST(DesktopStateTest, AStartOrStopTheBrokerDidNotSeeEndIsFinishedByWhatTheHostSays) {
  auto started = decide(record(S::kStarting), heartbeat(H::kSeenRunning, 1002, 10), kTiming);
  ASSERT_TRUE(started.changed());
  EXPECT_EQ(started.record.state, S::kRunning);
  auto stopped = decide(record(S::kStopping), heartbeat(H::kSeenStopped, 1002, 10), kTiming);
  ASSERT_TRUE(stopped.changed());
  EXPECT_EQ(stopped.record.state, S::kStopped);
  // A guest still running while a stop is under way: the stop decides.
  EXPECT_EQ(decide(record(S::kStopping), heartbeat(H::kSeenRunning, 1002, 10), kTiming).verdict,
            Verdict::kKeep);
}

TEST(DesktopStateTest, AStartNobodyFinishedIsGivenUpAfterTheStartTimeout) {
  auto starting = record(S::kStarting, 1000);
  EXPECT_EQ(decide(starting, heartbeat(H::kSeenStopped, 1179, 10), kTiming).verdict,
            Verdict::kKeep);
  auto given = decide(starting, heartbeat(H::kSeenStopped, 1180, 11), kTiming);
  ASSERT_TRUE(given.changed());
  EXPECT_EQ(given.record.state, S::kStopped);
}

TEST(DesktopStateTest, OnlyTheDesktopsOwnHostSpeaksForIt) {
  // A guest missing on another host says nothing of this one.
  EXPECT_EQ(decide(record(S::kRunning), heartbeat(H::kSeenStopped, 2000, 10, kOtherHost), kTiming)
                .verdict,
            Verdict::kKeep);
  // A persistent desktop's disk is on its host: a same-named guest elsewhere is not it.
  EXPECT_EQ(decide(record(S::kStopped, 1000, 0, kHost),
                   heartbeat(H::kSeenRunning, 2000, 10, kOtherHost), kTiming)
                .verdict,
            Verdict::kKeep);
  // A desktop with no host yet (non-persistent, stopped) is adopted where it runs.
  auto adopted = decide(record(S::kStopped, 1000, 0, std::nullopt),
                        heartbeat(H::kSeenRunning, 2000, 10, kOtherHost), kTiming);
  ASSERT_TRUE(adopted.changed());
  EXPECT_EQ(adopted.record.hostId, kOtherHost);
}

TEST(DesktopStateTest, AdoptingWithoutComparableNumbersWaitsOutTheGraceAfterAStop) {
  auto stopped = record(S::kStopped, 1000, 0, std::nullopt);
  EXPECT_EQ(decide(stopped, heartbeat(H::kSeenRunning, 1010, 0), kTiming).verdict, Verdict::kStale);
  EXPECT_TRUE(decide(stopped, heartbeat(H::kSeenRunning, 1031, 0), kTiming).changed());
}

TEST(DesktopStateTest, ANewerNumberIsKeptEvenWhenTheStateStays) {
  auto t = decide(record(S::kRunning, 1000, 500), heartbeat(H::kSeenRunning, 1010, 900), kTiming);
  EXPECT_EQ(t.verdict, Verdict::kKeep);
  EXPECT_EQ(t.record.seq, 900);
}

}  // namespace
}  // namespace aula::broker
