// The Broker aggregate: its settings, counters and context, and each service
// built over them in dependency order.
#include "aula/broker/broker.hpp"

namespace aula::broker {

Broker::Broker(db::Database& database, BrokerSettings brokerSettings, const Clock& clock,
               EventBus& events, HostLink& hostLink, Directory* directory)
    : settings(std::move(brokerSettings)),
      context{.db = database,
              .settings = settings,
              .clock = clock,
              .events = events,
              .hosts = hostLink,
              .directory = directory,
              .counters = counters},
      auth(context),
      org(context),
      templates(context),
      desktops(context),
      deployments(context, desktops),
      hosts(context),
      enrolment(context),
      bootHosts(context),
      images(context),
      access(context),
      workstations(context, auth) {}

}  // namespace aula::broker
