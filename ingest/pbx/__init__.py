"""On-premise PBXs: the Asterisk AMI client and the ``Master.csv`` importer."""
