"""Loss terms of the paper: content, adversarial (hinge), feature matching, embedding match; pixel L1."""
