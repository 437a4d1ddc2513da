from streamtask.cli import main

main()
