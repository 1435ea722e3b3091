"""Reading results folders: aggregation, statistics, tables and plots (files only)."""
