from mirrord.cli import main

main()
