// The desktop state machine (see desktop_state.hpp).
#include "aula/broker/desktop_state.hpp"

#include <array>
#include <cassert>
#include <utility>

namespace aula::broker {

namespace {

constexpr std::array<std::pair<DesktopState, std::string_view>, 4> kNames{{
    {DesktopState::kStopped, "stopped"},
    {DesktopState::kStarting, "starting"},
    {DesktopState::kRunning, "running"},
    {DesktopState::kStopping, "stopping"},
}};

Transition keep(const DesktopRecord& r, std::string_view why) {
  return Transition{.verdict = Verdict::kKeep, .record = r, .why = why};
}

Transition stale(const DesktopRecord& r, std::string_view why) {
  return Transition{.verdict = Verdict::kStale, .record = r, .why = why};
}

Transition refuse(const DesktopRecord& r, Refusal refusal) {
  return Transition{.verdict = Verdict::kRefused,
                    .record = r,
                    .refusal = refusal,
                    .why = "the command does not fit the state"};
}

Transition change(DesktopRecord r, DesktopState to, const Observation& o, std::string_view why) {
  r.state = to;
  r.since = o.at;
  return Transition{.verdict = Verdict::kChange, .record = r, .why = why};
}

// Takes the observation's number into the record when it is the newest.
DesktopRecord numbered(DesktopRecord r, const Observation& o) {
  if (o.seq != 0 && o.hostId && (r.seqHostId != o.hostId || o.seq > r.seq)) {
    r.seq = o.seq;
    r.seqHostId = o.hostId;
  }
  return r;
}

// Whether a numbered observation comes from before what is recorded.
bool olderThanRecord(const DesktopRecord& r, const Observation& o) {
  return o.seq != 0 && r.seq != 0 && o.hostId && r.seqHostId == o.hostId && o.seq <= r.seq;
}

// Whether an observation may have been made before the state began: an
// un-numbered heartbeat, or one from a host the record's number is not
// from, within the grace.
bool mayPredateState(const DesktopRecord& r, const Observation& o, const StateTiming& t) {
  bool comparable = o.seq != 0 && r.seq != 0 && r.seqHostId == o.hostId;
  if (comparable)
    return false;
  if (o.source == Source::kEvent && o.seq == 0)
    return false;  // an event is news of now
  return o.at - r.since < t.grace.count();
}

Transition onCommand(const DesktopRecord& r, const Observation& o) {
  using S = DesktopState;
  switch (o.what) {
    case Happening::kStartRequested:
      if (r.state == S::kStopping)
        return refuse(r, Refusal::kIsStopping);
      if (r.state != S::kStopped)
        return keep(r, "the desktop runs or starts already");
      {
        auto placed = r;
        placed.hostId = o.hostId ? o.hostId : r.hostId;
        return change(placed, S::kStarting, o, "a start was asked for");
      }
    case Happening::kStartSucceeded: {
      auto n = numbered(r, o);
      if (r.state == S::kStarting) {
        n.hostId = o.hostId ? o.hostId : r.hostId;
        return change(n, S::kRunning, o, "the agent started the guest");
      }
      // Running already (a heartbeat saw it first), or a stop came since:
      // the stop, queued behind the start on the agent, wins.
      return keep(n, "the start ended after something newer");
    }
    case Happening::kStartFailed:
      if (r.state == S::kStarting)
        return change(r, S::kStopped, o, "the start failed");
      return keep(r, "the failed start was overtaken");
    case Happening::kStopRequested:
      if (r.state == S::kStopped)
        return keep(r, "the desktop is stopped already");
      if (r.state == S::kStopping)
        return refuse(r, Refusal::kAlreadyStopping);
      return change(r, S::kStopping, o, "a stop was asked for");
    case Happening::kForceStopRequested:
      if (r.state == S::kStopped)
        return keep(r, "the desktop is stopped already");
      return change(r, S::kStopping, o, "a power-off was asked for");
    case Happening::kStopSucceeded: {
      auto n = numbered(r, o);
      if (r.state == S::kStopped)
        return keep(n, "the desktop is stopped already");
      return change(n, S::kStopped, o, "the agent stopped the guest");
    }
    case Happening::kStopFailed:
      // The agent did not confirm: the guest may still run, and the next
      // heartbeat says whether it does.
      if (r.state == S::kStopping)
        return change(r, S::kRunning, o, "the stop was not confirmed");
      return keep(r, "the failed stop was overtaken");
    case Happening::kSeenRunning:
    case Happening::kSeenStopped:
      break;
  }
  assert(false && "observations are not commands");
  return keep(r, "");
}

}  // namespace

std::string_view desktopStateName(DesktopState state) {
  for (const auto& [s, name] : kNames) {
    if (s == state)
      return name;
  }
  assert(false && "every DesktopState has a name");
  return "";
}

std::optional<DesktopState> parseDesktopState(std::string_view name) {
  for (const auto& [s, n] : kNames) {
    if (n == name)
      return s;
  }
  return std::nullopt;
}

bool holdsHost(DesktopState state) {
  return state == DesktopState::kStarting || state == DesktopState::kRunning;
}

Transition decide(const DesktopRecord& r, const Observation& o, const StateTiming& t) {
  using S = DesktopState;
  if (o.what != Happening::kSeenRunning && o.what != Happening::kSeenStopped)
    return onCommand(r, o);
  if (olderThanRecord(r, o))
    return stale(r, "observed before what is recorded");
  bool onItsHost = o.hostId && r.hostId == o.hostId;
  auto n = numbered(r, o);

  if (o.what == Happening::kSeenRunning) {
    switch (r.state) {
      case S::kRunning:
        return onItsHost ? keep(n, "runs as recorded") : keep(r, "runs on another host");
      case S::kStarting:
        if (!onItsHost)
          return keep(r, "a guest of this desktop runs on another host");
        n.hostId = o.hostId;
        return change(n, S::kRunning, o, "a start the broker did not see end");
      case S::kStopping:
        return keep(r, "the stop under way decides");
      case S::kStopped:
        // A guest the broker thinks stopped runs: started outside the broker,
        // or a start it lost track of. Adopt it, unless the observation may
        // be older than the stop.
        if (r.hostId && !onItsHost)
          return keep(r, "the desktop's disk lives on another host");
        if (mayPredateState(r, o, t))
          return stale(r, "may have been observed before the stop");
        n.hostId = o.hostId;
        return change(n, S::kRunning, o, "a guest seen running was adopted");
    }
  }
  // kSeenStopped: only the host it runs on speaks for it.
  if (!onItsHost)
    return keep(r, "not the desktop's host");
  switch (r.state) {
    case S::kStopped:
      return keep(n, "stopped as recorded");
    case S::kStopping:
      return change(n, S::kStopped, o, "a stop the broker did not see end");
    case S::kRunning:
      if (mayPredateState(r, o, t))
        return stale(r, "may have been observed before the start");
      return change(n, S::kStopped, o, "the guest is gone");
    case S::kStarting:
      if (o.at - r.since < t.startTimeout.count())
        return keep(r, "the start under way decides");
      return change(n, S::kStopped, o, "a start nobody finished was given up");
  }
  assert(false && "every state is handled");
  return keep(r, "");
}

}  // namespace aula::broker
