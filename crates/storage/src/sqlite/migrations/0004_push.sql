-- XEP-0357 push registrations: one per device (app server JID and node),
-- kept across restarts. `seq` orders them by age for push_max_devices.
CREATE TABLE push_registrations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    options TEXT NOT NULL,
    errors INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX push_registrations_device ON push_registrations (owner, service, node);
