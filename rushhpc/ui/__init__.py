"""What people look at: the command line, the dashboard, notebooks and plots."""
