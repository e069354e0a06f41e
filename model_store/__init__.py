"""The artifact format shared by training (writer) and the service (reader); torch-free."""
