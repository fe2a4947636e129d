-- Leases that expired without a commit are abandoned (a late commit is refused) and their
-- output object, named after the lease id, is deleted by the sweeper.
ALTER TABLE weir_compaction_leases ADD COLUMN abandoned_at bigint;
ALTER TABLE weir_compaction_leases ADD COLUMN cleaned_at bigint;
CREATE INDEX weir_compaction_leases_open ON weir_compaction_leases (expires_at)
    WHERE committed_at IS NULL AND cleaned_at IS NULL;
