-- Open Service Broker (issue 4). A project made by the broker links to its service
-- instance and carries the plan's quotas; NULL quotas (projects made by
-- `iron-api admin create-project`) are unlimited.
ALTER TABLE projects
    ADD COLUMN plan_id             text,
    -- The project's tasks running at once (preparing or running, or queued for
    -- adoption with a backend ref); more wait queued. The lease query honours it.
    ADD COLUMN max_concurrency     integer CHECK (max_concurrency > 0),
    ADD COLUMN max_timeout_seconds integer CHECK (max_timeout_seconds > 0),
    ADD COLUMN max_payload_bytes   integer CHECK (max_payload_bytes > 0),
    ADD COLUMN max_queued_tasks    integer CHECK (max_queued_tasks > 0),
    ADD COLUMN max_schedules       integer CHECK (max_schedules > 0),
    -- NULL = every priority; otherwise other priorities fall back to 0.
    ADD COLUMN allowed_priorities  integer[],
    -- Set by deprovision: the project is disabled (tokens revoked, tasks and schedules
    -- cancelled) and deleted once the purge grace has passed.
    ADD COLUMN deleted_at          timestamptz;

CREATE INDEX projects_deleted ON projects (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE broker_instances (
    id                 text PRIMARY KEY,          -- the OSB instance id
    project_id         text NOT NULL UNIQUE REFERENCES projects(id) ON DELETE CASCADE,
    service_id         text NOT NULL,
    plan_id            text NOT NULL,
    organization_guid  text NOT NULL,
    space_guid         text NOT NULL,
    parameters         jsonb NOT NULL DEFAULT '{}',
    context            jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- A binding is a token of the instance's project. Its credentials (token included) are
-- sealed so that an identical repeated bind returns the very same ones.
CREATE TABLE broker_bindings (
    id                  text PRIMARY KEY,         -- the OSB binding id
    instance_id         text NOT NULL REFERENCES broker_instances(id) ON DELETE CASCADE,
    service_id          text NOT NULL,
    plan_id             text NOT NULL,
    app_guid            text NOT NULL DEFAULT '',
    bind_resource       jsonb NOT NULL DEFAULT '{}',
    parameters          jsonb NOT NULL DEFAULT '{}',
    token_hash          bytea NOT NULL REFERENCES tokens(token_hash) ON DELETE CASCADE,
    credentials_sealed  bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broker_bindings_instance ON broker_bindings (instance_id);
