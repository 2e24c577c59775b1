"""APG, FreeCure's stage 4 (asymmetric prompt guidance), in pure torch: the schedule split and DDIM inversion
(`schedule`) and the prompt split into template and expression words (`expressions`)."""
