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

db::Statement statesQuery(db::Dialect dialect, const std::vector<std::int64_t>& ids) {
  auto in = db::inIds(dialect, ids);
  return {std::string(kStateSelect) + " WHERE d.id " + in.sql, std::move(in.params)};
}

Result<std::map<std::int64_t, StateRow>> statesOf(const std::vector<db::Row>& rows) {
  std::map<std::int64_t, StateRow> out;
  for (const auto& r : rows) {
    auto row = AULA_TRY(stateOf(r));
    out.emplace(row.id, row);
  }
  return out;
}

Result<std::map<std::int64_t, StateRow>> loadStates(db::Transaction& tx,
                                                    const std::vector<std::int64_t>& ids) {
  if (ids.empty())
    return std::map<std::int64_t, StateRow>();
  auto q = statesQuery(tx.dialect(), ids);
  return statesOf(AULA_TRY(tx.query(q.sql, q.params)));
}

Result<std::vector<StateRow>> loadStatesOnHost(db::Transaction& tx, std::int64_t hostId) {
  auto rows = AULA_TRY(tx.query(std::string(kStateSelect) + " WHERE d.host_id = ?", {hostId}));
  std::vector<StateRow> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(AULA_TRY(stateOf(r)));
  return out;
}

namespace {

// The columns a transition writes, their values, and the desktop.
struct Write {
  std::vector<db::Column> columns;
  db::Params values;  // then the desktop's id
};

// What stores a transition, or none when there is nothing to store.
std::optional<Write> transitionWrite(const StateRow& row, const Transition& t) {
  const auto& r = t.record;
  db::Value seqHost = r.seqHostId ? db::Value(*r.seqHostId) : db::Value();
  const db::Column seq{"observed_seq", "BIGINT"};
  const db::Column seqHostColumn{"observed_host_id", "BIGINT"};
  if (!t.changed()) {
    if (t.verdict != Verdict::kKeep || r.seq == row.record.seq)
      return std::nullopt;
    return Write{{seq, seqHostColumn}, {r.seq, seqHost, row.id}};
  }
  Write w{{{"state", "TEXT"}, {"state_since", "BIGINT"}, seq, seqHostColumn},
          {std::string(desktopStateName(r.state)), r.since, r.seq, seqHost}};
  std::optional<std::int64_t> host = r.hostId;
  switch (r.state) {
    case DesktopState::kRunning:
      w.columns.push_back({"started_at", "BIGINT"});
      w.values.emplace_back(r.since);
      break;
    case DesktopState::kStopped:
      w.columns.push_back({"stopped_at", "BIGINT"});
      w.values.emplace_back(r.since);
      w.columns.push_back({"connected", "INTEGER"});
      w.values.emplace_back(std::int64_t{0});
      // The disk of a persistent desktop that ran stays on its host; any
      // other desktop is free to start anywhere next time.
      if (!(row.persistent && (row.everRan || row.record.state == DesktopState::kRunning)))
        host.reset();
      break;
    case DesktopState::kStarting:
    case DesktopState::kStopping:
      break;
  }
  w.columns.push_back({"host_id", "BIGINT"});
  w.values.push_back(host ? db::Value(*host) : db::Value());
  w.values.emplace_back(row.id);
  return w;
}

}  // namespace

Status storeTransition(db::Transaction& tx, const StateRow& row, const Transition& t) {
  return storeTransitions(tx, {{row, t}});
}

Status storeTransitions(db::Transaction& tx,
                        const std::vector<std::pair<StateRow, Transition>>& transitions) {
  // The same columns for the same kind of change: one batch each.
  std::map<std::string, std::pair<std::vector<db::Column>, std::vector<db::Params>>> batches;
  for (const auto& [row, t] : transitions) {
    auto w = transitionWrite(row, t);
    if (!w)
      continue;
    std::string kind;
    for (const auto& c : w->columns)
      kind += c.name + ",";
    auto& batch = batches[kind];
    batch.first = w->columns;
    batch.second.push_back(std::move(w->values));
  }
  for (const auto& [kind, batch] : batches)
    AULA_TRY_STATUS(
        db::updateRows(tx, "desktops", batch.first, "id", batch.second, db::Send::kLater));
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
