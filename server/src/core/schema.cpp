// The broker's database schema, as numbered migrations. A migration, once
// released, is never edited: a change is a new migration.
#include "aula/broker/schema.hpp"

namespace aula::broker {

const std::vector<db::Migration>& migrations() {
  // SQLite and PostgreSQL differ in DDL only in how an id is generated:
  // "INTEGER PRIMARY KEY" (SQLite's rowid) versus an identity column.
  static const std::vector<db::Migration> kMigrations = [] {
    std::string v1 = R"SQL(
CREATE TABLE categories (
  id $ID,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE TABLE groups_ (
  id $ID,
  category_id BIGINT NOT NULL REFERENCES categories(id),
  name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  ldap_dn TEXT,
  created_at BIGINT NOT NULL,
  UNIQUE (category_id, name)
);
CREATE TABLE users (
  id $ID,
  username TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL DEFAULT '',
  email TEXT NOT NULL DEFAULT '',
  role TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'advanced', 'user')),
  category_id BIGINT REFERENCES categories(id),
  auth_source TEXT NOT NULL DEFAULT 'local' CHECK (auth_source IN ('local', 'ldap')),
  password_hash TEXT,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  last_login_at BIGINT
);
CREATE TABLE group_members (
  group_id BIGINT NOT NULL REFERENCES groups_(id) ON DELETE CASCADE,
  user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);
CREATE TABLE sessions (
  id $ID,
  token_hash TEXT NOT NULL UNIQUE,
  user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),
  name TEXT NOT NULL DEFAULT '',
  address TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  last_used_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE quotas (
  subject TEXT PRIMARY KEY,
  desktops BIGINT,
  running BIGINT,
  vcpus BIGINT,
  memory_mb BIGINT,
  disk_gb BIGINT,
  templates BIGINT
);
CREATE TABLE pools (
  id $ID,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE TABLE hosts (
  id $ID,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('hypervisor', 'workstation')),
  pool_id BIGINT NOT NULL REFERENCES pools(id),
  address TEXT NOT NULL DEFAULT '',
  agent_port BIGINT NOT NULL DEFAULT 0,
  state TEXT NOT NULL DEFAULT 'new'
    CHECK (state IN ('new', 'online', 'lost', 'maintenance', 'disabled')),
  cpus BIGINT NOT NULL DEFAULT 0,
  memory_mb BIGINT NOT NULL DEFAULT 0,
  vcpu_ratio_limit DOUBLE PRECISION,
  cpu_idle DOUBLE PRECISION NOT NULL DEFAULT 0,
  free_memory_mb BIGINT NOT NULL DEFAULT 0,
  allocated_vcpus BIGINT NOT NULL DEFAULT 0,
  running_guests BIGINT NOT NULL DEFAULT 0,
  storage TEXT NOT NULL DEFAULT '{}',
  cert_fingerprint TEXT,
  spice_subject TEXT,
  last_heartbeat BIGINT,
  created_at BIGINT NOT NULL
);
CREATE TABLE enrolment_tokens (
  id $ID,
  token_hash TEXT NOT NULL UNIQUE,
  host_name TEXT NOT NULL,
  kind TEXT NOT NULL,
  pool_id BIGINT NOT NULL REFERENCES pools(id),
  created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT
);
CREATE TABLE templates (
  id $ID,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  owner_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
  category_id BIGINT REFERENCES categories(id),
  storage TEXT NOT NULL,
  base_disk TEXT NOT NULL,
  disk_gb BIGINT NOT NULL,
  vcpus BIGINT NOT NULL,
  memory_mb BIGINT NOT NULL,
  video TEXT NOT NULL CHECK (video IN ('qxl', 'virtio')),
  version BIGINT NOT NULL DEFAULT 1,
  enabled INTEGER NOT NULL DEFAULT 1,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE template_access (
  template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
  subject TEXT NOT NULL,
  PRIMARY KEY (template_id, subject)
);
CREATE TABLE template_pools (
  template_id BIGINT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
  pool_id BIGINT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
  PRIMARY KEY (template_id, pool_id)
);
CREATE TABLE deployments (
  id $ID,
  name TEXT NOT NULL UNIQUE,
  template_id BIGINT NOT NULL REFERENCES templates(id),
  group_id BIGINT NOT NULL REFERENCES groups_(id),
  owner_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
  persistent INTEGER NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE desktops (
  id $ID,
  name TEXT NOT NULL,
  owner_id BIGINT NOT NULL REFERENCES users(id),
  template_id BIGINT NOT NULL REFERENCES templates(id),
  deployment_id BIGINT REFERENCES deployments(id),
  persistent INTEGER NOT NULL,
  state TEXT NOT NULL DEFAULT 'stopped'
    CHECK (state IN ('stopped', 'starting', 'running', 'stopping', 'failed')),
  host_id BIGINT REFERENCES hosts(id),
  disk_path TEXT,
  vcpus BIGINT NOT NULL,
  memory_mb BIGINT NOT NULL,
  disk_gb BIGINT NOT NULL,
  base_storage TEXT NOT NULL,
  base_disk TEXT NOT NULL,
  template_version BIGINT NOT NULL,
  connected INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  started_at BIGINT,
  UNIQUE (owner_id, name)
);
CREATE INDEX desktops_owner ON desktops(owner_id);
CREATE INDEX desktops_deployment ON desktops(deployment_id);
CREATE INDEX desktops_host ON desktops(host_id);
CREATE TABLE boot_hosts (
  mac TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('thin_client', 'workstation', 'unknown')),
  channel TEXT NOT NULL DEFAULT 'stable',
  hostname TEXT NOT NULL DEFAULT '',
  host_id BIGINT REFERENCES hosts(id) ON DELETE SET NULL,
  first_seen BIGINT NOT NULL,
  last_seen BIGINT
);
CREATE TABLE audit_log (
  id $ID,
  at BIGINT NOT NULL,
  actor_id BIGINT,
  actor TEXT NOT NULL,
  address TEXT NOT NULL DEFAULT '',
  action TEXT NOT NULL,
  object TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
)
)SQL";
    static const char* const kImages = R"SQL(
CREATE TABLE images (
  id $ID,
  flavour TEXT NOT NULL CHECK (flavour IN ('thin', 'workstation')),
  version TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  manifest TEXT NOT NULL,
  added_at BIGINT NOT NULL,
  added_by TEXT NOT NULL,
  UNIQUE (flavour, version)
);
CREATE TABLE image_releases (
  id $ID,
  channel TEXT NOT NULL,
  flavour TEXT NOT NULL,
  image_id BIGINT NOT NULL REFERENCES images(id),
  released_at BIGINT NOT NULL,
  released_by TEXT NOT NULL,
  withdrawn_at BIGINT
);
CREATE INDEX image_releases_current ON image_releases (channel, flavour, withdrawn_at);
ALTER TABLE boot_hosts ADD COLUMN image_version TEXT;
)SQL";
    auto with = [](std::string sql, const std::string& id) {
      for (auto pos = sql.find("$ID"); pos != std::string::npos; pos = sql.find("$ID", pos)) {
        sql.replace(pos, 3, id);
      }
      return sql;
    };
    return std::vector<db::Migration>{
        {1, "initial schema", with(v1, "INTEGER PRIMARY KEY"),
         with(v1, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")},
        // Guests a host runs that the broker does not know: reported by the
        // agent's heartbeat, never stopped by the broker.
        {2, "hosts.unknown_guests",
         "ALTER TABLE hosts ADD COLUMN unknown_guests TEXT NOT NULL DEFAULT '[]'",
         "ALTER TABLE hosts ADD COLUMN unknown_guests TEXT NOT NULL DEFAULT '[]'"},
        // Templates made from desktops: the desktop and the host whose
        // templates storage holds the image Aula made (and may delete), and,
        // for a re-based image, the base it depends on. All NULL for a
        // template whose base an admin placed.
        {3, "templates from desktops",
         "ALTER TABLE templates ADD COLUMN from_desktop_id BIGINT;\n"
         "ALTER TABLE templates ADD COLUMN origin_host_id BIGINT REFERENCES hosts(id) ON DELETE "
         "SET NULL;\n"
         "ALTER TABLE templates ADD COLUMN backing_storage TEXT;\n"
         "ALTER TABLE templates ADD COLUMN backing_disk TEXT",
         ""},
        // When a desktop last stopped: a heartbeat sampled on the host before
        // a stop, arriving after it, must not mark the desktop running again.
        {4, "desktops.stopped_at", "ALTER TABLE desktops ADD COLUMN stopped_at BIGINT", ""},
        // The desktop state machine's record: when the state began, and the
        // newest agent observation acted on (its number and host), so an
        // older observation never undoes a newer command.
        {5, "desktop state order",
         "ALTER TABLE desktops ADD COLUMN state_since BIGINT;\n"
         "ALTER TABLE desktops ADD COLUMN observed_seq BIGINT NOT NULL DEFAULT 0;\n"
         "ALTER TABLE desktops ADD COLUMN observed_host_id BIGINT;\n"
         "UPDATE desktops SET state_since = COALESCE(stopped_at, started_at, created_at)",
         ""},
        // How many consoles a desktop has handed out: a viewer whose link
        // dropped tells "someone else took it" (the number grew) from "the
        // network broke" before it takes the desktop back.
        {6, "desktops.consoles",
         "ALTER TABLE desktops ADD COLUMN consoles BIGINT NOT NULL DEFAULT 0", ""},
        // Which USB devices a lab PC's greeter hands to a desktop of the
        // template: none, storage only (the default: USB sticks), or all.
        {7, "templates.usb",
         "ALTER TABLE templates ADD COLUMN usb TEXT NOT NULL DEFAULT 'storage' "
         "CHECK (usb IN ('none', 'storage', 'all'))",
         ""},
        // Network-boot images and their releases: an image is a built
        // flavour/version whose files the broker serves; a release puts one
        // on a channel, and a rollback withdraws the newest release, so the
        // one before it is current again. A boot host may be pinned to one
        // version instead of following its channel.
        {8, "images and releases", with(kImages, "INTEGER PRIMARY KEY"),
         with(kImages, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")},
        // What each host's agent last reported of its PCI devices (the JSON
        // of `aula-agent devices --json`; '' before any report), so an
        // admin can choose a workstation's devices.
        {9, "hosts.devices",
         "ALTER TABLE hosts ADD COLUMN devices TEXT NOT NULL DEFAULT '';\n"
         "ALTER TABLE hosts ADD COLUMN devices_at BIGINT",
         ""},
        // Workstations: the devices an admin chose from a host's report
        // (with the IDs they had then), the template its disk grows from,
        // the VM's size, who may use it, and who has it now.
        {10, "workstations", R"SQL(
CREATE TABLE workstations (
  host_id BIGINT PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
  devices TEXT NOT NULL,
  template_id BIGINT NOT NULL REFERENCES templates(id),
  vcpus BIGINT NOT NULL,
  memory_mb BIGINT NOT NULL,
  huge_pages INTEGER NOT NULL DEFAULT 0,
  hide_kvm INTEGER NOT NULL DEFAULT 0,
  hyperv_vendor_id TEXT NOT NULL DEFAULT '',
  claimed_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
  claimed_at BIGINT,
  updated_at BIGINT NOT NULL
);
CREATE TABLE workstation_access (
  host_id BIGINT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
  subject TEXT NOT NULL,
  PRIMARY KEY (host_id, subject)
);
)SQL",
         ""},
    };
  }();
  return kMigrations;
}

}  // namespace aula::broker
