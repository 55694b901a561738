// The broker's policy: who may do what to which object, quotas, placement,
// sessions, and the audit log, as one service per area. Every operation takes
// the Actor who asks and checks its rights first; every change is one
// database transaction and one audit entry. Inputs and outputs are JSON
// objects, the shapes documented in docs/api.md, so the HTTP layer only
// routes.
//
// Broker only owns the services and what they share; callers use the
// services directly: broker.desktops.start(actor, id).
#pragma once

#include "aula/broker/access_service.hpp"
#include "aula/broker/auth_service.hpp"
#include "aula/broker/boot_host_service.hpp"
#include "aula/broker/context.hpp"
#include "aula/broker/deployment_service.hpp"
#include "aula/broker/desktop_service.hpp"
#include "aula/broker/enrolment_service.hpp"
#include "aula/broker/host_service.hpp"
#include "aula/broker/image_service.hpp"
#include "aula/broker/org_service.hpp"
#include "aula/broker/template_service.hpp"
#include "aula/broker/workstation_service.hpp"

namespace aula::broker {

struct Broker {
  Broker(db::Database& database, BrokerSettings brokerSettings, const Clock& clock,
         EventBus& events, HostLink& hosts, Directory* directory);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Declared before the services, which keep references to them.
  BrokerSettings settings;
  Counters counters;
  BrokerContext context;

  AuthService auth;
  OrgService org;
  TemplateService templates;
  DesktopService desktops;
  DeploymentService deployments;
  HostService hosts;
  EnrolmentService enrolment;
  BootHostService bootHosts;
  ImageService images;
  AccessService access;
  WorkstationService workstations;
};

}  // namespace aula::broker
