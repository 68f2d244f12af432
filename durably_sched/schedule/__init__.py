"""Schedules: cron fire times with a DST policy, and the schedules.yaml loader."""
