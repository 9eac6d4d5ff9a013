BEGIN TRANSACTION;
CREATE TABLE draft_recipients (
    draft_id    TEXT PRIMARY KEY REFERENCES drafts(id),
    recipients  TEXT NOT NULL
);
INSERT INTO "draft_recipients" VALUES('cb51454763e84ff1b13321979da57d1a','[{"e164": "+6581000000", "cc": 65, "national": "81000000", "region": "SG", "message": "Hi P0", "segments": 1}, {"e164": "+6581000001", "cc": 65, "national": "81000001", "region": "SG", "message": "Hi P1", "segments": 1}, {"e164": "+6581000002", "cc": 65, "national": "81000002", "region": "SG", "message": "Hi P2", "segments": 1}, {"e164": "+6581000003", "cc": 65, "national": "81000003", "region": "SG", "message": "Hi P3", "segments": 1}, {"e164": "+6581000004", "cc": 65, "national": "81000004", "region": "SG", "message": "Hi P4", "segments": 1}]');
INSERT INTO "draft_recipients" VALUES('15fcc7fa01994fdd8b95f1433b5b187f','[{"e164": "+6581000000", "cc": 65, "national": "81000000", "region": "SG", "message": "Hi P0", "segments": 1}, {"e164": "+6581000001", "cc": 65, "national": "81000001", "region": "SG", "message": "Hi P1", "segments": 1}, {"e164": "+6581000002", "cc": 65, "national": "81000002", "region": "SG", "message": "Hi P2", "segments": 1}]');
CREATE TABLE drafts (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    state       TEXT NOT NULL,                -- checking | open | confirmed | discarded
    payload     TEXT NOT NULL,                -- what the confirmation shows; `count`, not the list itself
    job_id      TEXT,
    created_at  REAL NOT NULL
);
INSERT INTO "drafts" VALUES('cb51454763e84ff1b13321979da57d1a','U0AGENT','confirmed','{"user_id": "U0AGENT", "channel_id": "C0SUPPORT", "total_segments": 5, "kind": "batch", "count": 5}','5b90a00215dc4bc98439b626629943db',1.79547046445786666864e+09);
INSERT INTO "drafts" VALUES('15fcc7fa01994fdd8b95f1433b5b187f','U0AGENT','open','{"user_id": "U0AGENT", "channel_id": "C0SUPPORT", "total_segments": 3, "kind": "batch", "count": 3}',NULL,1.79547046445856928829e+09);
CREATE TABLE job_sources (
    job_id            TEXT PRIMARY KEY REFERENCES jobs(id),
    draft_id          TEXT NOT NULL,
    stored            INTEGER NOT NULL,
    unstored_segments INTEGER NOT NULL        -- estimated segments of the recipients not yet stored
);
INSERT INTO "job_sources" VALUES('5b90a00215dc4bc98439b626629943db','cb51454763e84ff1b13321979da57d1a',2,3);
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
INSERT INTO "jobs" VALUES('d89cd954834c4f1897af981227a680c8','single','done','view:V1','U0AGENT','C0SUPPORT',NULL,NULL,NULL,'d89cd954834c4f1897af981227a680c8',NULL,1,'1700000000.000100','1700000000.000100','{"dry_run": false}',1.79547046445611143111e+09,NULL,1.0);
INSERT INTO "jobs" VALUES('f28d30931a5c4659be6b80ba07d7ec2c','single','queued',NULL,'U0AGENT','C0SUPPORT',NULL,NULL,NULL,'f28d30931a5c4659be6b80ba07d7ec2c',NULL,1,NULL,NULL,'{"dry_run": false}',1.79547046445765829088e+09,NULL,NULL);
INSERT INTO "jobs" VALUES('5b90a00215dc4bc98439b626629943db','batch','running','draft:cb51454763e84ff1b13321979da57d1a','U0AGENT','C0SUPPORT',NULL,NULL,NULL,'5b90a00215dc4bc98439b626629943db',NULL,5,NULL,NULL,'{"bulk": true, "dry_run": false}',1.79547046445809221262e+09,NULL,NULL);
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
    est_segments INTEGER,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
INSERT INTO "recipients" VALUES('d89cd954834c4f1897af981227a680c8',0,'+85251234567',852,'51234567','HK','Your parcel ships today','accepted','100000001',1,NULL,NULL,'R1','Hong Kong',NULL,0,NULL,1.79547046445644617081e+09);
INSERT INTO "recipients" VALUES('f28d30931a5c4659be6b80ba07d7ec2c',0,'+6581234567',65,'81234567','SG','Queued before the upgrade','queued',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,1.79547046445765829088e+09);
INSERT INTO "recipients" VALUES('5b90a00215dc4bc98439b626629943db',0,'+6581000000',65,'81000000','SG','Hi P0','accepted',NULL,NULL,NULL,NULL,'R2',NULL,NULL,0,1,1.79547046445844054218e+09);
INSERT INTO "recipients" VALUES('5b90a00215dc4bc98439b626629943db',1,'+6581000001',65,'81000001','SG','Hi P1','in_flight',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1,1.79547046445829629893e+09);
CREATE TABLE threads (
    channel_id  TEXT NOT NULL,
    e164        TEXT NOT NULL,
    thread_ts   TEXT NOT NULL,
    PRIMARY KEY (channel_id, e164)
);
INSERT INTO "threads" VALUES('C0SUPPORT','+85251234567','1700000000.000100');
CREATE INDEX recipients_state ON recipients(job_id, state);
CREATE INDEX jobs_by_user ON jobs(created_by, created_at);
COMMIT;
