BEGIN TRANSACTION;
CREATE TABLE drafts (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    state       TEXT NOT NULL,                -- open | confirmed | discarded
    payload     TEXT NOT NULL,
    job_id      TEXT,
    created_at  REAL NOT NULL
);
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,              -- single | batch | fanout
    state         TEXT NOT NULL,              -- queued | running | done
    source_key    TEXT UNIQUE,                -- idempotency key (a modal's view id, a draft id)
    created_by    TEXT NOT NULL,
    channel_id    TEXT,
    response_url  TEXT,
    sender_id     TEXT,
    type          TEXT,
    task_id       TEXT,
    validity      INTEGER,
    total         INTEGER NOT NULL,
    thread_ts     TEXT,
    parent_ts     TEXT,
    meta          TEXT NOT NULL DEFAULT '{}',
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL
);
INSERT INTO "jobs" VALUES('c4e9c3a6e73e4ffe839da73c921ecc2b','single','done',NULL,'U0AGENT','C0SUPPORT',NULL,NULL,NULL,'c4e9c3a6e73e4ffe839da73c921ecc2b',NULL,1,'1690000000.000100','1690000000.000100','{}',1.79547047368145060546e+09,NULL,NULL);
INSERT INTO "jobs" VALUES('9fd1d4d5464848e1b47b1e38dd8def93','single','queued',NULL,'U0AGENT','C0SUPPORT',NULL,NULL,NULL,'9fd1d4d5464848e1b47b1e38dd8def93',NULL,1,NULL,NULL,'{}',1.79547047368315815926e+09,NULL,NULL);
CREATE TABLE recipients (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    idx         INTEGER NOT NULL,
    e164        TEXT NOT NULL,
    country_code INTEGER NOT NULL,
    national    TEXT NOT NULL,
    region      TEXT NOT NULL,
    message     TEXT NOT NULL,
    state       TEXT NOT NULL,                -- queued | in_flight | accepted | failed | unknown
    message_id  TEXT,
    segments    INTEGER,
    code        TEXT,
    error       TEXT,
    request_id  TEXT,
    country     TEXT,
    carrier     TEXT,
    retryable   INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
INSERT INTO "recipients" VALUES('c4e9c3a6e73e4ffe839da73c921ecc2b',0,'+85251234567',852,'51234567','HK','First release','accepted','100000009',1,NULL,NULL,NULL,NULL,NULL,0,1.79547047368184423447e+09);
INSERT INTO "recipients" VALUES('9fd1d4d5464848e1b47b1e38dd8def93',0,'+6581234567',65,'81234567','SG','Queued in the first release','queued',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1.79547047368315815926e+09);
CREATE TABLE threads (
    channel_id  TEXT NOT NULL,
    e164        TEXT NOT NULL,
    thread_ts   TEXT NOT NULL,
    PRIMARY KEY (channel_id, e164)
);
INSERT INTO "threads" VALUES('C0SUPPORT','+85251234567','1690000000.000100');
CREATE INDEX recipients_state ON recipients(job_id, state);
CREATE INDEX jobs_by_user ON jobs(created_by, created_at);
COMMIT;
