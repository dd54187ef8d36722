-- The IronWorker v2 data model. IDs are 24 lowercase hex characters (see ids.go).

CREATE TABLE projects (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each token is stored.
CREATE TABLE tokens (
    token_hash  bytea PRIMARY KEY,
    project_id  text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX tokens_project ON tokens (project_id);

-- A code package; every upload under the same name adds a revision. Deleted codes are
-- kept (deleted_at) so that their tasks still resolve, and the name becomes free again.
CREATE TABLE codes (
    id                  text PRIMARY KEY,
    project_id          text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name                text NOT NULL,
    rev                 integer NOT NULL,
    latest_revision_id  text NOT NULL,
    paused              boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE UNIQUE INDEX codes_live_name ON codes (project_id, name) WHERE deleted_at IS NULL;
CREATE INDEX codes_project ON codes (project_id, created_at);

CREATE TABLE code_revisions (
    id                text PRIMARY KEY,
    code_id           text NOT NULL REFERENCES codes(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    project_id        text NOT NULL,
    rev               integer NOT NULL,
    image             text NOT NULL DEFAULT '',
    command           text NOT NULL DEFAULT '',
    runtime           text NOT NULL DEFAULT '',
    stack             text NOT NULL DEFAULT '',
    file_name         text NOT NULL DEFAULT '',
    config_sealed     bytea,          -- AES-GCM, see package secrets
    env_vars_sealed   bytea,          -- sealed JSON object
    max_concurrency   integer,        -- NULL = unlimited
    retries           integer NOT NULL DEFAULT 0,
    retries_delay     integer NOT NULL DEFAULT 0,
    default_priority  integer,        -- NULL = 0
    archive_size      bigint,         -- NULL = no zip (image only)
    checksum          text NOT NULL DEFAULT '',  -- md5 of the zip
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (code_id, rev)
);

-- Zip archives, in chunks so that upload and download stream with bounded memory.
CREATE TABLE code_archive_chunks (
    revision_id  text NOT NULL REFERENCES code_revisions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    seq          integer NOT NULL,
    data         bytea NOT NULL,
    PRIMARY KEY (revision_id, seq)
);

CREATE TABLE tasks (
    id                text PRIMARY KEY,
    project_id        text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    code_id           text NOT NULL REFERENCES codes(id) ON DELETE CASCADE,
    code_name         text NOT NULL,
    code_revision_id  text NOT NULL,
    code_rev          integer NOT NULL,
    status            text NOT NULL CHECK (status IN ('queued','preparing','running','complete','error','cancelled','timeout','killed')),
    priority          integer NOT NULL CHECK (priority BETWEEN 0 AND 2),
    timeout           integer NOT NULL,
    delay             integer NOT NULL DEFAULT 0,
    cluster           text NOT NULL DEFAULT 'default',
    label             text NOT NULL DEFAULT '',
    payload           text NOT NULL DEFAULT '',
    msg               text NOT NULL DEFAULT '',
    percent           integer,
    exit_code         integer,
    run_at            timestamptz NOT NULL,   -- created_at + delay: not leased before
    start_time        timestamptz,
    end_time          timestamptz,
    retry_count       integer NOT NULL DEFAULT 0,
    original_task_id  text,
    retry_task_id     text,
    schedule_id       text,
    scheduled_for     timestamptz,            -- the schedule instant this task fires
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- The queue: what a lease scans, highest priority then oldest first.
CREATE INDEX tasks_queue ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_project_created ON tasks (project_id, created_at DESC, id DESC);
CREATE INDEX tasks_code_status ON tasks (code_id, status);
CREATE INDEX tasks_active ON tasks (status) WHERE status IN ('queued','preparing','running');
-- A schedule instant can produce one task at most, whoever fires it.
CREATE UNIQUE INDEX tasks_schedule_instant ON tasks (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;

-- Task output as appended by runners; stream 1 = stdout, 2 = stderr.
CREATE TABLE task_log_chunks (
    task_id     text NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq         bigserial,
    stream      smallint NOT NULL CHECK (stream IN (1, 2)),
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE schedules (
    id              text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    code_name       text NOT NULL,
    name            text NOT NULL DEFAULT '',
    payload         text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ('scheduled','complete','cancelled')),
    msg             text NOT NULL DEFAULT '',
    start_at        timestamptz NOT NULL,
    end_at          timestamptz,
    run_every       integer,          -- seconds, or NULL for a cron schedule
    cron            text,             -- 5-field cron in UTC, or NULL
    run_times       integer NOT NULL DEFAULT 0,   -- 0 = unlimited
    run_count       integer NOT NULL DEFAULT 0,
    error_count     integer NOT NULL DEFAULT 0,
    priority        integer,          -- NULL = the code's default
    timeout         integer,          -- NULL = the default timeout
    task_delay      integer NOT NULL DEFAULT 0,
    cluster         text NOT NULL DEFAULT 'default',
    label           text NOT NULL DEFAULT '',
    next_start      timestamptz,      -- NULL once the schedule has ended
    last_run_time   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((run_every IS NULL) <> (cron IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_start) WHERE status = 'scheduled';
CREATE INDEX schedules_project ON schedules (project_id, created_at DESC, id DESC);

-- Private Docker registry credentials, as ironcli's `docker login` sends them.
CREATE TABLE registry_credentials (
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    server_address  text NOT NULL,
    auth_sealed     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, server_address)
);
