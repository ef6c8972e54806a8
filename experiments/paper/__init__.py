"""Run records (one self-describing JSON per run) and the tables and figures made from them."""
