-- The licence line of an adapter version (its base model's terms and its training data's licences),
-- shown wherever the adapter is listed.
ALTER TABLE adapter_versions ADD COLUMN license TEXT NOT NULL DEFAULT '';
