"""The ICM algorithm with no model imports: data types, consistency rules, the score, the search."""
