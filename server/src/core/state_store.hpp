// The desktop state machine's records in the database (not a public
// header): reading a desktop's DesktopRecord in a transaction, storing a
// decided transition (state, its start time, the host, the newest agent
// observation, and what follows from a start or stop), and telling the
// event stream afterwards. DesktopService (commands) and HostService
// (heartbeats, events) both change states only through these.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include "aula/broker/context.hpp"
#include "aula/broker/desktop_state.hpp"

namespace aula::broker::detail {

// What the state machine needs of one desktop, and who may hear of it.
struct StateRow {
  std::int64_t id = 0;
  DesktopRecord record;
  bool persistent = true;
  bool everRan = false;  // started_at is set: a persistent desktop's disk exists on its host
  std::int64_t ownerId = 0;
  std::optional<std::int64_t> categoryId;
};

// The desktop with this id; none when there is none.
Result<std::optional<StateRow>> loadState(db::Transaction& tx, std::int64_t id);
// The desktops with these ids that exist, by id, in one query.
Result<std::map<std::int64_t, StateRow>> loadStates(db::Transaction& tx,
                                                    const std::vector<std::int64_t>& ids);
// The same as a statement to send with other reads (Transaction::queryAll),
// and its rows read.
db::Statement statesQuery(db::Dialect dialect, const std::vector<std::int64_t>& ids);
Result<std::map<std::int64_t, StateRow>> statesOf(const std::vector<db::Row>& rows);
// Every desktop recorded on this host.
Result<std::vector<StateRow>> loadStatesOnHost(db::Transaction& tx, std::int64_t hostId);

// Writes a transition decide() returned (kChange, or kKeep with a newer
// observation number; nothing otherwise). A desktop that stops lets go of
// its host unless it is persistent and has run there (its disk is there).
Status storeTransition(db::Transaction& tx, const StateRow& row, const Transition& t);
// The same for many desktops, one statement per kind of change. The writes
// are queued (Transaction::execLater): they go with the next statement or
// the COMMIT, and fail the transaction if they fail.
Status storeTransitions(db::Transaction& tx,
                        const std::vector<std::pair<StateRow, Transition>>& transitions);

// A state change to publish once its transaction committed.
struct StateChange {
  std::int64_t id = 0;
  DesktopState state = DesktopState::kStopped;
  std::optional<std::int64_t> hostId;
  std::int64_t ownerId = 0;
  std::optional<std::int64_t> categoryId;
};
StateChange changeOf(const StateRow& row, const Transition& t);

// Publishes "desktop.state" events and logs who changed them.
void publishChanges(EventBus& events, const std::vector<StateChange>& changes,
                    std::string_view source);

// The timing rules from the broker's settings.
StateTiming stateTiming(const BrokerSettings& settings);

}  // namespace aula::broker::detail
