-- The gateway request that produced an assistant message: the same id as its usage_events
-- row and the access log line, so a reply can be traced to what it cost.
ALTER TABLE messages ADD COLUMN request_id text;
