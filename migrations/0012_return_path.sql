-- Whether a host's agent opens QEMU's return path on every outgoing move (issue
-- #12): the source then reports a move complete only once the destination has
-- loaded the state, so a destination may take the stream before its QEMU listens
-- on moves without post-copy too. Agents before it leave it false.
ALTER TABLE hosts ADD COLUMN opens_return_path boolean NOT NULL DEFAULT false;
