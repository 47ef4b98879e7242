"""Editor plugins (GIMP 3, Krita 5) and the standard-library client module they carry."""
