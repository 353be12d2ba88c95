"""What the report draws: the charts, the retention plane, and the HTML page with its
interactive explorer."""
