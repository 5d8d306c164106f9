-- Each phase a migration went through, with when it began (issue #12): the API
-- derives each phase's duration from the next one's start (or the end).
ALTER TABLE migrations ADD COLUMN phases jsonb NOT NULL DEFAULT '[]';
