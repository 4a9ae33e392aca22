"""Human review of pairs: labels by reviewers, and how well each judge agrees with them."""
