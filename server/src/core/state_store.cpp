// The desktop state machine's records (see state_store.hpp).
#include "core/state_store.hpp"

#include <fmt/format.h>

#include "aula/common/log.hpp"

namespace aula::broker::detail {

namespace {

// Columns of kStateSelect, in its order.
struct StateCol {
  enum : std::size_t {
    kId,
    kState,
    kHostId,
    kStateSince,
    kObservedSeq,
    kObservedHostId,
    kPersistent,
    kStartedAt,
    kOwnerId,
    kCategoryId
  };
};

constexpr const char* kStateSelect =
    "SELECT d.id, d.state, d.host_id, COALESCE(d.state_since, d.stopped_at, d.started_at, "
    "d.created_at), d.observed_seq, d.observed_host_id, d.persistent, d.started_at, d.owner_id, "
    "u.category_id FROM desktops d JOIN users u ON u.id = d.owner_id";

Result<StateRow> stateOf(const db::Row& r) {
  auto state = parseDesktopState(r.text(StateCol::kState));
  if (!state) {
    return makeError(Errc::kInternal, "Desktop {} has the unknown state '{}' in the database.",
                     r.integer(StateCol::kId), r.text(StateCol::kState));
  }
  StateRow row;
  row.id = r.integer(StateCol::kId);
  row.record = DesktopRecord{.state = *state,
                             .hostId = r.optInteger(StateCol::kHostId),
                             .since = r.integer(StateCol::kStateSince),
                             .seq = r.integer(StateCol::kObservedSeq),
                             .seqHostId = r.optInteger(StateCol::kObservedHostId)};
  row.persistent = r.integer(StateCol::kPersistent) != 0;
  row.everRan = r.optInteger(StateCol::kStartedAt).has_value();
  row.ownerId = r.integer(StateCol::kOwnerId);
  row.categoryId = r.optInteger(StateCol::kCategoryId);
  return row;
}

}  // namespace

Result<std::optional<StateRow>> loadState(db::Transaction& tx, std::int64_t id) {
  auto rows = AULA_TRY(tx.query(std::string(kStateSelect) + " WHERE d.id = ?", {id}));
  if (rows.empty())
    return std::optional<StateRow>();
  return std::optional<StateRow>(AULA_TRY(stateOf(rows[0])));
}

Result<std::vector<StateRow>> loadStatesOnHost(db::Transaction& tx, std::int64_t hostId) {
  auto rows = AULA_TRY(tx.query(std::string(kStateSelect) + " WHERE d.host_id = ?", {hostId}));
  std::vector<StateRow> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(AULA_TRY(stateOf(r)));
  return out;
}

Status storeTransition(db::Transaction& tx, const StateRow& row, const Transition& t) {
  const auto& r = t.record;
  db::Value seqHost = r.seqHostId ? db::Value(*r.seqHostId) : db::Value();
  if (!t.changed()) {
    if (t.verdict != Verdict::kKeep || r.seq == row.record.seq)
      return {};
    AULA_TRY(tx.exec("UPDATE desktops SET observed_seq = ?, observed_host_id = ? WHERE id = ?",
                     {r.seq, seqHost, row.id}));
    return {};
  }
  std::optional<std::int64_t> host = r.hostId;
  std::string extra;
  db::Params params{std::string(desktopStateName(r.state)), r.since, r.seq, seqHost};
  switch (r.state) {
    case DesktopState::kRunning:
      extra = ", started_at = ?";
      params.push_back(r.since);
      break;
    case DesktopState::kStopped:
      extra = ", stopped_at = ?, connected = 0";
      params.push_back(r.since);
      // The disk of a persistent desktop that ran stays on its host; any
      // other desktop is free to start anywhere next time.
      if (!(row.persistent && (row.everRan || row.record.state == DesktopState::kRunning)))
        host.reset();
      break;
    case DesktopState::kStarting:
    case DesktopState::kStopping:
      break;
  }
  params.push_back(host ? db::Value(*host) : db::Value());
  params.push_back(row.id);
  AULA_TRY(
      tx.exec("UPDATE desktops SET state = ?, state_since = ?, observed_seq = ?, "
              "observed_host_id = ?" +
                  extra + ", host_id = ? WHERE id = ?",
              params));
  return {};
}

StateChange changeOf(const StateRow& row, const Transition& t) {
  return StateChange{.id = row.id,
                     .state = t.record.state,
                     .hostId = t.record.hostId,
                     .ownerId = row.ownerId,
                     .categoryId = row.categoryId};
}

void publishChanges(EventBus& events, const std::vector<StateChange>& changes,
                    std::string_view source) {
  for (const auto& c : changes) {
    log::info("Desktop {} is {} on host {}, by {}.", c.id, desktopStateName(c.state),
              c.hostId.value_or(0), source);
    events.publish(Event{.type = "desktop.state",
                         .data = Json{{"id", c.id},
                                      {"state", desktopStateName(c.state)},
                                      {"host_id", c.hostId ? Json(*c.hostId) : Json()}},
                         .ownerId = c.ownerId,
                         .categoryId = c.categoryId});
  }
}

StateTiming stateTiming(const BrokerSettings& settings) {
  return StateTiming{.grace = settings.reconcileGrace, .startTimeout = settings.consoleStartWait};
}

}  // namespace aula::broker::detail
