"""The scheduler's platform-free half: job schedules and their fire times (schedules.py), the record of each job's
runs that makes a run happen once across processes (runs.py), and who leads (leader.py). The scheduler itself,
APScheduler on the elected leader, is bot.scheduler."""
