"""Loyalty (issue 15): tier programmes as data, evaluated on client activity. Being built."""
