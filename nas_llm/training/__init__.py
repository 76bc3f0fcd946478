"""Training a super-network: sampling strategies, teachers, importance ordering, the loop, evaluation."""
