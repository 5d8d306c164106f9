-- How many of its hosts' migration slots a move takes (issue #12): a move that
-- mirrors its disks to another host sends two streams over the link for most of
-- its run (the disk copy, which keeps carrying the guest's writes, and then the
-- memory), so it takes two; every other move takes one.
ALTER TABLE migrations ADD COLUMN slots smallint NOT NULL DEFAULT 1 CHECK (slots BETWEEN 1 AND 8);
