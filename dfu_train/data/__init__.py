"""Ray-free cohort reading, synthesis and splitting."""
