from taskwarden.cli import main

main()
