-- A group's instances in machine id order, for listing one group page by
-- page without walking the whole application's primary key.
CREATE INDEX instances_group_machine ON instances (app_id, group_name, machine_id);
