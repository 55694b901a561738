// The desktop state machine: every change of a desktop's state, whether a
// command of this broker, the agent's answer to it, a heartbeat's guest
// list or a libvirt lifecycle event, goes through decide(), one pure
// function of what is recorded and what was observed. Start, stop,
// reconciliation and events all ask it, so the rules live here once and
// are unit-tested transition by transition without a database.
//
// Order. Agents number what they observe (proto::ObservationClock). The
// record keeps the newest number it acted on and the host it came from; an
// observation from that host with a smaller number was made before and is
// stale: a heartbeat sampled before a stop never undoes the stop. Without a
// number (or from another host) time decides: a guest missing from a
// heartbeat counts only once the state is `grace` old, since the heartbeat
// may have been sampled before the state changed.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace aula::broker {

enum class DesktopState { kStopped, kStarting, kRunning, kStopping };

// "stopped", "starting", "running", "stopping": the names in the database
// and the API.
std::string_view desktopStateName(DesktopState state);
std::optional<DesktopState> parseDesktopState(std::string_view name);
// Whether the desktop holds a host's resources (counts against quotas).
bool holdsHost(DesktopState state);

// What the broker has recorded of one desktop.
struct DesktopRecord {
  DesktopState state = DesktopState::kStopped;
  std::optional<std::int64_t> hostId;     // where it runs, or where its disk lives
  std::int64_t since = 0;                 // Unix seconds when `state` began
  std::int64_t seq = 0;                   // newest agent observation acted on; 0: none
  std::optional<std::int64_t> seqHostId;  // the host that numbered `seq`
};

enum class Happening {
  // Commands of this broker, and the agent's answers to them.
  kStartRequested,
  kStartSucceeded,
  kStartFailed,
  kStopRequested,
  kForceStopRequested,  // power off: also ends a stop already under way
  kStopSucceeded,
  kStopFailed,
  // What an agent observed: in a heartbeat's guest list, or as an event.
  kSeenRunning,
  kSeenStopped,
};

enum class Source { kCommand, kHeartbeat, kEvent };

struct Observation {
  Happening what = Happening::kSeenRunning;
  Source source = Source::kCommand;
  std::int64_t at = 0;                 // Unix seconds on the broker
  std::optional<std::int64_t> hostId;  // the host it concerns (observations: the reporter)
  std::int64_t seq = 0;                // the agent's number; 0: none given
};

struct StateTiming {
  // A heartbeat without a number that lacks a guest counts after this long.
  std::chrono::seconds grace{30};
  // A start nobody finished (its broker died) is given up after this long
  // without the guest running.
  std::chrono::seconds startTimeout{180};
};

enum class Verdict {
  kChange,   // store `record`
  kKeep,     // nothing to change (`record` may carry a newer seq)
  kStale,    // older than what is recorded: ignored
  kRefused,  // a command the state does not allow: see `refusal`
};
enum class Refusal { kNone, kIsStopping, kAlreadyStopping };

struct Transition {
  Verdict verdict = Verdict::kKeep;
  DesktopRecord record;  // the record to store (for kChange and kKeep)
  Refusal refusal = Refusal::kNone;
  std::string_view why;  // one phrase for the log: "a guest seen running was adopted"

  bool changed() const { return verdict == Verdict::kChange; }
};

Transition decide(const DesktopRecord& recorded, const Observation& observed,
                  const StateTiming& timing);

}  // namespace aula::broker
